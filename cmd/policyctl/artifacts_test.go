package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/policyd/policyd/bridge"
)

func TestArtifactsHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "artifacts"},
		{[]string{"artifacts", "--help"}, "rollback"},
		{[]string{"artifacts", "add", "--help"}, "-sign-key"},
		{[]string{"artifacts", "add", "-h"}, "-metadata"},
		{[]string{"artifacts", "verify", "--help"}, "-trusted-key"},
		{[]string{"artifacts", "list", "--help"}, "-repository"},
		{[]string{"artifacts", "report", "--help"}, "-format"},
		{[]string{"artifacts", "keygen", "--help"}, "-out"},
		{[]string{"artifacts", "sign", "--help"}, "-key"},
		{[]string{"artifacts", "migrate", "--help"}, "schema 2"},
		{[]string{"artifacts", "import-triton", "--help"}, "-config-out"},
		{[]string{"artifacts", "rollback", "--help"}, "-token-file"},
	} {
		code, out, _ := call(c.args...)
		if code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, stdout %q", c.args, code, out)
		}
	}
}

func TestArtifactsUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"artifacts"}, "Commands:"},
		{[]string{"artifacts", "nope"}, `unknown command "nope"`},
		{[]string{"artifacts", "add", "--repository", "r", "--name", "m", "--version", "1.0.0"}, "want one MODEL.onnx"},
		{[]string{"artifacts", "add", "--name", "m", "--version", "1.0.0", "x.onnx"}, "--repository, --name and --version are required"},
		{[]string{"artifacts", "add", "--repository", "r", "--name", "m", "--version", "1.2", "x.onnx"}, `--version: version "1.2" is not a semantic version`},
		{[]string{"artifacts", "add", "--repository", "r", "--name", "../m", "--version", "1.0.0", "x.onnx"}, "--name: model name"},
		{[]string{"artifacts", "add", "--repository", "r", "--name", "m", "--version", "1.0.0", "--metadata", "novalue", "x.onnx"}, `--metadata "novalue": want k=v`},
		{[]string{"artifacts", "add", "--bogus"}, "flag provided but not defined"},
		{[]string{"artifacts", "verify"}, "--repository is required"},
		{[]string{"artifacts", "verify", "--repository", "r", "a", "b"}, "want at most one NAME[@VERSION]"},
		{[]string{"artifacts", "list", "--repository", "r", "x"}, "unexpected arguments"},
		{[]string{"artifacts", "report", "--repository", "r", "--format", "csv"}, `--format "csv": want text or json`},
		{[]string{"artifacts", "keygen"}, "--out is required"},
		{[]string{"artifacts", "sign", "--repository", "r", "--key", "k"}, "want one NAME@VERSION"},
		{[]string{"artifacts", "sign", "--repository", "r", "--key", "k", "m@latest"}, "want NAME@VERSION"},
		{[]string{"artifacts", "migrate"}, "--repository is required"},
		{[]string{"artifacts", "rollback", "m"}, "--to is required"},
		{[]string{"artifacts", "rollback", "--to", "1.0.0"}, "want one model NAME"},
		{[]string{"artifacts", "rollback", "m", "--to", "one"}, "--to: version"},
		{[]string{"artifacts", "rollback", "m", "--to", "1.0.0", "--server", "127.0.0.1:8000"}, "want http(s)://HOST[:PORT]"},
	} {
		code, _, errs := call(c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errs)
		}
	}
}

func TestArtifactsFailures(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"artifacts", "verify", "--repository", filepath.Join(dir, "none")}, "no such file"},
		{[]string{"artifacts", "verify", "--repository", dir, "nope"}, "no model nope"},
		{[]string{"artifacts", "verify", "--repository", dir, "--trusted-key", filepath.Join(dir, "x.pub")}, "public key"},
		{[]string{"artifacts", "sign", "--repository", dir, "--key", filepath.Join(dir, "x.key"), "m@1.0.0"}, "private key"},
		{[]string{"artifacts", "list", "--repository", filepath.Join(dir, "none")}, "no such file"},
	} {
		code, _, errs := call(c.args...)
		if code != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errs)
		}
	}
}

func peerModel(t *testing.T) string {
	t.Helper()
	p := filepath.Join("..", "..", "..", "shared", "peers", "models", "mlp-small.onnx")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no peer model: %v", err)
	}
	if _, err := bridge.NewRuntime(""); err != nil {
		t.Skipf("native library: %v", err)
	}
	return p
}

// TestArtifactsWalkthrough is the operator walkthrough: keygen, add (signed), verify, report,
// tamper, verify fails naming the file.
func TestArtifactsWalkthrough(t *testing.T) {
	model := peerModel(t)
	repo, keys := t.TempDir(), t.TempDir()
	key := filepath.Join(keys, "release")
	mustOK := func(args ...string) string {
		t.Helper()
		code, out, errs := call(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errs)
		}
		return out
	}
	out := mustOK("artifacts", "keygen", "--out", key)
	if !strings.HasPrefix(out, "key ") {
		t.Errorf("keygen: %q", out)
	}
	out = mustOK("artifacts", "add", "--repository", repo, "--name", "mlp", "--version", "v1.0.0", model,
		"--metadata", "training_run=run-7", "--metadata", "parent_version=0.9.0", "--sign-key", key+".key")
	if !strings.Contains(out, "added mlp@1.0.0 sha256:") || !strings.Contains(out, "signed by ") {
		t.Errorf("add: %q", out)
	}
	mustOK("artifacts", "add", "--repository", repo, "--name", "mlp", "--version", "1.1.0", model)
	code, _, errs := call("artifacts", "add", "--repository", repo, "--name", "mlp", "--version", "1.0.0", model)
	if code != 1 || !strings.Contains(errs, "version 1.0.0 of mlp already exists") {
		t.Errorf("add over an existing version: exit %d %q", code, errs)
	}
	notONNX := filepath.Join(t.TempDir(), "bad.onnx")
	os.WriteFile(notONNX, []byte("not a model"), 0o644)
	code, _, errs = call("artifacts", "add", "--repository", repo, "--name", "mlp", "--version", "2.0.0", notONNX)
	if code != 1 || !strings.Contains(errs, "model does not load: mlp@2.0.0: ") {
		t.Errorf("add of a broken model: exit %d %q", code, errs)
	}

	out = mustOK("artifacts", "verify", "--repository", repo)
	if !strings.Contains(out, "ok mlp@1.0.0 sha256:") || !strings.Contains(out, "ok mlp@1.1.0 sha256:") {
		t.Errorf("verify: %q", out)
	}
	mustOK("artifacts", "verify", "--repository", repo, "mlp@1.0.0", "--trusted-key", key+".pub")
	code, _, errs = call("artifacts", "verify", "--repository", repo, "--trusted-key", key+".pub")
	if code != 1 || !strings.Contains(errs, "mlp@1.1.0: unsigned artifact; trusted keys are configured") {
		t.Errorf("verify unsigned with keys: exit %d %q", code, errs)
	}
	mustOK("artifacts", "sign", "--repository", repo, "--key", key+".key", "mlp@1.1.0")
	mustOK("artifacts", "verify", "--repository", repo, "--trusted-key", key+".pub")

	out = mustOK("artifacts", "list", "--repository", repo)
	if !strings.Contains(out, "mlp\t1.0.0\tok\tsha256:") {
		t.Errorf("list: %q", out)
	}
	out = mustOK("artifacts", "report", "--repository", repo, "--trusted-key", key+".pub")
	for _, want := range []string{"mlp\n  1.0.0  ok", "(verified)", "model.onnx  sha256:", "parent_version=0.9.0", "2 ok, 0 with errors"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	var rep struct {
		Models []struct {
			Name     string
			Versions []struct{ Version, Status string }
		}
	}
	if err := json.Unmarshal([]byte(mustOK("artifacts", "report", "--repository", repo, "--format", "json")), &rep); err != nil ||
		len(rep.Models) != 1 || len(rep.Models[0].Versions) != 2 || rep.Models[0].Versions[1].Status != "ok" {
		t.Errorf("json report: %v %+v", err, rep)
	}

	// Tamper: one flipped byte.
	p := filepath.Join(repo, "mlp", "1.1.0", "model.onnx")
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o644)
	code, out, errs = call("artifacts", "verify", "--repository", repo)
	if code != 1 || !strings.Contains(errs, "mlp@1.1.0: model.onnx: sha256 mismatch (manifest ") || !strings.Contains(out, "ok mlp@1.0.0") {
		t.Errorf("verify after tampering: exit %d\n%s%s", code, out, errs)
	}
	if code, out, _ := call("artifacts", "report", "--repository", repo); code != 1 || !strings.Contains(out, "1.1.0  error") {
		t.Errorf("report after tampering: exit %d\n%s", code, out)
	}
	if code, _, errs := call("artifacts", "sign", "--repository", repo, "--key", key+".key", "mlp@1.1.0"); code != 1 || !strings.Contains(errs, "sha256 mismatch") {
		t.Errorf("sign of a tampered version: exit %d %q", code, errs)
	}
}

func TestArtifactsMigrate(t *testing.T) {
	model := peerModel(t)
	repo := t.TempDir()
	dir := filepath.Join(repo, "mlp", "1.0.0")
	os.MkdirAll(dir, 0o755)
	b, _ := os.ReadFile(model)
	os.WriteFile(filepath.Join(dir, "model.onnx"), b, 0o644)
	os.WriteFile(filepath.Join(dir, "manifest.sig"), []byte(`{}`), 0o644)
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"name":"mlp","version":"1.0.0","model":"model.onnx","sha256":"6ed025087680a6b41812c7ccba0abc387c8d20611cf4be7e8b4fbbde02ceef00"}`), 0o644)
	if code, _, errs := call("artifacts", "verify", "--repository", repo); code != 1 || !strings.Contains(errs, "policyctl artifacts migrate") {
		t.Fatalf("verify schema 1: exit %d %q", code, errs)
	}
	code, out, errs := call("artifacts", "migrate", "--repository", repo)
	if code != 0 || !strings.Contains(out, "migrated mlp@1.0.0 sha256:") || !strings.Contains(out, "policyctl artifacts sign --repository "+repo+" --key KEY mlp@1.0.0") {
		t.Fatalf("migrate: exit %d\n%s%s", code, out, errs)
	}
	m, _ := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if !strings.Contains(string(m), `"datatype": "FP32"`) {
		t.Errorf("migrated manifest lacks the engine's io:\n%s", m)
	}
	if code, _, errs := call("artifacts", "verify", "--repository", repo); code != 0 {
		t.Errorf("verify after migrate: exit %d %q", code, errs)
	}
	if code, out, _ := call("artifacts", "migrate", "--repository", repo); code != 0 || !strings.Contains(out, "nothing to migrate") {
		t.Errorf("second migrate: exit %d %q", code, out)
	}
}

func TestArtifactsRollback(t *testing.T) {
	var got struct {
		method, path, auth, ctype string
		body                      map[string]string
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path, got.auth, got.ctype = r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &got.body)
		if got.auth != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"unauthorized"}`)
			return
		}
		if got.body["version"] == "9.9.9" {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"no version 9.9.9 of 3DBall"}`)
			return
		}
		io.WriteString(w, `{"model":"3DBall","default":"`+got.body["version"]+`","previous":"1.1.0","switch_seconds":0.00001}`+"\n")
	}))
	defer srv.Close()
	token := filepath.Join(t.TempDir(), "token")
	os.WriteFile(token, []byte("s3cret\n"), 0o600)

	code, out, errs := call("artifacts", "rollback", "3DBall", "--to", "v1.0.0", "--server", srv.URL+"/", "--token-file", token)
	if code != 0 || out != `{"model":"3DBall","default":"1.0.0","previous":"1.1.0","switch_seconds":0.00001}`+"\n" {
		t.Errorf("rollback: exit %d %q %q", code, out, errs)
	}
	if got.method != "POST" || got.path != "/v2/admin/models/3DBall/default" || got.ctype != "application/json" || got.body["version"] != "1.0.0" {
		t.Errorf("request %+v", got)
	}
	if code, _, errs := call("artifacts", "rollback", "3DBall", "--to", "9.9.9", "--server", srv.URL, "--token-file", token); code != 1 || !strings.Contains(errs, "404 Not Found") || !strings.Contains(errs, "no version 9.9.9") {
		t.Errorf("rollback to a missing version: exit %d %q", code, errs)
	}
	if code, _, errs := call("artifacts", "rollback", "3DBall", "--to", "1.0.0", "--server", srv.URL); code != 1 || !strings.Contains(errs, "401") || got.auth != "" {
		t.Errorf("rollback without token: exit %d %q (auth %q)", code, errs, got.auth)
	}
	if code, _, errs := call("artifacts", "rollback", "3DBall", "--to", "1.0.0", "--server", srv.URL, "--token-file", filepath.Join(t.TempDir(), "none")); code != 1 || !strings.Contains(errs, "no such file") {
		t.Errorf("missing token file: exit %d %q", code, errs)
	}
	srv.Close()
	if code, _, errs := call("artifacts", "rollback", "3DBall", "--to", "1.0.0", "--server", srv.URL); code != 1 || !strings.Contains(errs, "connect") {
		t.Errorf("server down: exit %d %q", code, errs)
	}
}
