//go:build cgo

package server

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/repository"
)

// softmaxFreeDim is an ONNX model (opset 13) y = Softmax(x) over the last axis, x and y
// FLOAT [N, M] with both dimensions free: the shape a [B, T, F] sequence input has, whose
// element count a client chooses.
func softmaxFreeDim() []byte {
	msg := func(field protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), b)
	}
	str := func(field protowire.Number, s string) []byte { return msg(field, []byte(s)) }
	varint := func(field protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, field, protowire.VarintType), v)
	}
	cat := func(parts ...[]byte) (b []byte) {
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	// ValueInfoProto{name, type: TypeProto{tensor_type{elem_type FLOAT, shape{dim{dim_param}...}}}}
	value := func(name string) []byte {
		shape := cat(msg(1, str(2, "N")), msg(1, str(2, "M")))
		return cat(str(1, name), msg(2, msg(1, cat(varint(1, 1), msg(2, shape)))))
	}
	node := cat(str(1, "x"), str(2, "y"), str(3, "softmax"), str(4, "Softmax"))
	graph := cat(msg(1, node), str(2, "softmax_free_dim"), msg(11, value("x")), msg(12, value("y")))
	return cat(varint(1, 8), str(2, "policyd test"), msg(7, graph), msg(8, cat(str(1, ""), varint(2, 13))))
}

// freeDimServer serves softmaxFreeDim as "softmax" on a real engine and returns its handler.
func freeDimServer(t testing.TB) fasthttp.RequestHandler {
	t.Helper()
	if err := bridge.Available(); err != nil {
		t.Skip("native library unusable:", err)
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	dir := t.TempDir()
	model := filepath.Join(dir, "softmax.onnx")
	if err := os.WriteFile(model, softmaxFreeDim(), 0o644); err != nil {
		t.Fatal(err)
	}
	io := engineIO(t, rt, softmaxFreeDim())
	repoDir := filepath.Join(dir, "repo")
	if _, err := artifacts.Add(repoDir, artifacts.AddRequest{Name: "softmax", Version: "1.0.0", Model: model, Tool: "server test", IO: io}); err != nil {
		t.Fatal(err)
	}
	repo := repository.NewRepository(rt, nil)
	t.Cleanup(func() { repo.Close() })
	if _, err := repo.Apply(repository.Desired{Dir: repoDir}); err != nil {
		t.Fatal(err)
	}
	return New(NewRegistry(repo), nil, Options{}).Handler()
}

// post runs one request through h and returns the status and body.
func post(h fasthttp.RequestHandler, ctx *fasthttp.RequestCtx, path string, body []byte, binaryLen int) (int, []byte) {
	ctx.Request.Reset()
	ctx.Response.Reset()
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI(path)
	if binaryLen >= 0 {
		ctx.Request.Header.Set(inferHeaderLength, fmt.Sprint(binaryLen))
	}
	ctx.Request.SetBody(body)
	h(ctx)
	return ctx.Response.StatusCode(), ctx.Response.Body()
}

// Shapes whose element count wraps in 64 bits used to reach the native run with a tiny buffer
// ([3, 6148914691236517206] with two values: SIGSEGV in Softmax; [4, 2^62]: 200 with no data).
// Through the server and a real engine they are 400 naming the input, in JSON and in binary.
func TestFreeDimWrappingShapes(t *testing.T) {
	h := freeDimServer(t)
	var ctx fasthttp.RequestCtx
	const path = "/v2/models/softmax/infer"
	status, body := post(h, &ctx, path, []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[2,3],"data":[0,0,0,1,2,3]}]}`), -1)
	var resp struct {
		Outputs []struct {
			Shape []int64   `json:"shape"`
			Data  []float64 `json:"data"`
		} `json:"outputs"`
	}
	if status != 200 || json.Unmarshal(body, &resp) != nil || len(resp.Outputs) != 1 || len(resp.Outputs[0].Data) != 6 {
		t.Fatalf("[2,3]: %d %s", status, body)
	}
	if d := resp.Outputs[0].Data; math.Abs(d[0]-1.0/3) > 1e-6 || math.Abs(d[3]+d[4]+d[5]-1) > 1e-6 {
		t.Errorf("softmax = %v", d)
	}
	for _, c := range []struct{ shape, data string }{
		{"[3,6148914691236517206]", "[1,2]"},
		{"[4,4611686018427387904]", "[]"},
		{"[6148914691236517206,3]", "[1,2]"},
		{"[65536,65536]", "[1]"},
	} {
		want := `input "x": shape ` + c.shape + ` has too many elements`
		status, body := post(h, &ctx, path, []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":`+c.shape+`,"data":`+c.data+`}]}`), -1)
		if status != 400 || !strings.Contains(string(body), strings.ReplaceAll(want, `"`, `\"`)) {
			t.Errorf("%s: %d %s, want 400 saying %s", c.shape, status, body, want)
		}
		js := `{"inputs":[{"name":"x","datatype":"FP32","shape":` + c.shape + `,"parameters":{"binary_data_size":8}}]}`
		status, body = post(h, &ctx, path, append([]byte(js), make([]byte, 8)...), len(js))
		if status != 400 || !strings.Contains(string(body), strings.ReplaceAll(want, `"`, `\"`)) {
			t.Errorf("binary %s: %d %s, want 400 saying %s", c.shape, status, body, want)
		}
	}
}

// FuzzInferFreeDim sends shapes the fuzzer picks, with as many values as it picks, in JSON or
// in binary, to the real engine through the server: every answer is 200 (with rows that sum
// to 1) or 400, never a crash.
func FuzzInferFreeDim(f *testing.F) {
	f.Add(uint64(2), uint64(3), uint16(6), false)
	f.Add(uint64(3), uint64(6148914691236517206), uint16(2), false)
	f.Add(uint64(4), uint64(1)<<62, uint16(0), true)
	f.Add(uint64(1)<<63, uint64(2), uint16(0), false)
	f.Add(uint64(0), uint64(5), uint16(0), true)
	f.Add(uint64(1), uint64(1), uint16(1), true)
	h := freeDimServer(f)
	var ctx fasthttp.RequestCtx
	f.Fuzz(func(t *testing.T, d0, d1 uint64, n uint16, bin bool) {
		n %= 4096
		var body []byte
		hdr := -1
		if bin {
			js := fmt.Sprintf(`{"inputs":[{"name":"x","datatype":"FP32","shape":[%d,%d],"parameters":{"binary_data_size":%d}}]}`, d0, d1, 4*int(n))
			body = append([]byte(js), make([]byte, 4*int(n))...)
			for i := 0; i < int(n); i++ {
				binary.LittleEndian.PutUint32(body[len(js)+4*i:], math.Float32bits(float32(i%7)))
			}
			hdr = len(js)
		} else {
			var sb strings.Builder
			fmt.Fprintf(&sb, `{"inputs":[{"name":"x","datatype":"FP32","shape":[%d,%d],"data":[`, d0, d1)
			for i := 0; i < int(n); i++ {
				if i > 0 {
					sb.WriteByte(',')
				}
				fmt.Fprint(&sb, i%7)
			}
			sb.WriteString(`]}]}`)
			body = []byte(sb.String())
		}
		status, out := post(h, &ctx, "/v2/models/softmax/infer", body, hdr)
		switch status {
		case 400:
			return
		case 200:
		default:
			t.Fatalf("[%d,%d] with %d values: %d %s", d0, d1, n, status, out)
		}
		if d0*d1 != uint64(n) || d0 == 0 || d1 == 0 {
			t.Fatalf("[%d,%d] with %d values accepted", d0, d1, n)
		}
		var resp struct {
			Outputs []struct {
				Data []float64 `json:"data"`
			} `json:"outputs"`
		}
		if err := json.Unmarshal(out, &resp); err != nil || len(resp.Outputs) != 1 || len(resp.Outputs[0].Data) != int(n) {
			t.Fatalf("[%d,%d]: %s", d0, d1, out)
		}
		for r := 0; r < int(d0); r++ {
			sum := 0.0
			for _, v := range resp.Outputs[0].Data[r*int(d1) : (r+1)*int(d1)] {
				sum += v
			}
			if math.Abs(sum-1) > 1e-4 {
				t.Fatalf("[%d,%d]: row %d sums to %v", d0, d1, r, sum)
			}
		}
	})
}
