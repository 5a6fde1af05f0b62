package server

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/policyd/policyd/api/inference"
)

// TestGrpcModelConfig: ModelConfig answers the hand-written documents of testdata/config
// (written from model_config.proto), read into the generated inference.ModelConfig, field for
// field; a version not ready is Unavailable, an unknown model NotFound.
func TestGrpcModelConfig(t *testing.T) {
	ts := startGRPC(t, configRegistry(t), Options{QueueTimeout: 2 * time.Second})
	for _, tc := range []struct{ name, version, golden string }{
		{"policy", "1", "policy.json"},
		{"fixed", "", "fixed.json"},
		{"rnn", "", "rnn.json"},
	} {
		b, err := os.ReadFile(filepath.Join("testdata", "config", tc.golden))
		if err != nil {
			t.Fatal(err)
		}
		want := &inference.ModelConfig{}
		if err := protojson.Unmarshal(b, want); err != nil {
			t.Fatalf("%s as inference.ModelConfig: %v", tc.golden, err)
		}
		resp, err := ts.client.ModelConfig(grpcCtx(t), &inference.ModelConfigRequest{Name: tc.name, Version: tc.version})
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !proto.Equal(resp.Config, want) {
			t.Errorf("%s: ModelConfig\n%v\nwant (%s)\n%v", tc.name, resp.Config, tc.golden, want)
		}
	}
	_, err := ts.client.ModelConfig(grpcCtx(t), &inference.ModelConfigRequest{Name: "policy", Version: "3"})
	wantCode(t, err, codes.Unavailable, "version 3 failed to load")
	_, err = ts.client.ModelConfig(grpcCtx(t), &inference.ModelConfigRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, `"nope"`)
}
