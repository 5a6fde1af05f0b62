package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/repository"
)

// artifactsCommands is the `policyctl artifacts` group: the model repository.
func artifactsCommands() []*command {
	return []*command{
		{name: "add", short: "add a model version to a repository (checks it loads; atomic; never overwrites)", run: artifactsAdd},
		{name: "verify", short: "verify every file of every (or one) version; exit 1 on any problem", run: artifactsVerify},
		{name: "list", short: "list models and versions with digest and status", run: artifactsList},
		{name: "report", short: "integrity report: every model, version, file, digest, signer, status", run: artifactsReport},
		{name: "keygen", short: "make an ed25519 signing key pair NAME.key and NAME.pub", run: artifactsKeygen},
		{name: "sign", short: "sign a version's manifest (writes manifest.sig)", run: artifactsSign},
		{name: "import-triton", short: "import a Triton model repository (model/N/model.onnx + config.pbtxt) as N.0.0 versions and write the matching config", run: artifactsImportTriton},
		{name: "migrate", short: "rewrite schema-1 manifests as schema 2", run: artifactsMigrate},
		{name: "rollback", short: "switch a running server's default version of a model", run: artifactsRollback},
	}
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

// toolVersion is the "tool" of manifests policyctl writes.
func toolVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return "policyctl " + bi.Main.Version
	}
	return "policyctl dev"
}

func loadTrustedKeys(paths []string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, p := range paths {
		k, err := artifacts.LoadPublicKey(p)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// splitRef splits NAME[@VERSION].
func splitRef(s string) (name, version string) {
	name, version, _ = strings.Cut(s, "@")
	return name, version
}

// inspect loads an ONNX model through the engine and returns its I/O signature; a model that
// does not load is refused with the engine's message.
func inspect(onnx []byte, external map[string][]byte, name string) (artifacts.IO, error) {
	rt, err := bridge.NewRuntime("")
	if err != nil {
		return artifacts.IO{}, fmt.Errorf("engine: %w", err)
	}
	defer rt.Close()
	eng, err := rt.NewEngine(onnx, bridge.EngineOptions{Name: name, External: external})
	if err != nil {
		return artifacts.IO{}, fmt.Errorf("model does not load: %w", err)
	}
	defer eng.Close()
	return repository.Signature(eng), nil
}

const addAbout = `add a model version to a repository (checks it loads; atomic; never overwrites)
Loads MODEL.onnx through the engine (a model that does not load is refused with the
engine's message), then writes REPOSITORY/NAME/VERSION/ with model.onnx, the ONNX external-data
files it names (model.onnx.data, read from beside MODEL.onnx; a missing or symlinked one, or a
location that is absolute or has "..", is refused naming it) and manifest.json (every file's
sha256 and size, the model's inputs and outputs, the creation time, this tool's
version and the --metadata), signed with --sign-key when given. With --golden FILE, or
--golden-from onnxruntime, golden.json is stored too (docs/artifacts.md, Golden cases):
observations with expected outputs and tolerances, listed in the manifest (hashed and signed
like model.onnx) and checked against the model's inputs and outputs; the server runs them on
the backend and device it serves on before the version is ready. --golden-from onnxruntime
computes the expected outputs with ONNX Runtime (Node.js and onnxruntime-node: make refs
installs it under tools/reference) for the observations of --golden-inputs (a golden file
or a testdata/reference file) or for --golden-cases random ones drawn from --golden-seed over
the model's signature; outputs that ONNX Runtime samples (they change between runs) are not
checked. The version appears at once,
complete, or not at all; an existing version is never overwritten. VERSION is a semantic
version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]; v1.2.3 is stored as 1.2.3. Work folders
(NAME/.tmp-*) that interrupted adds of NAME left over an hour ago are removed first.
`

func artifactsAdd(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "--repository DIR --name NAME --version X.Y.Z MODEL.onnx [--metadata k=v]... [--sign-key KEY]", addAbout)
	repo := fs.String("repository", "", "repository `DIR` (required)")
	name := fs.String("name", "", "model `NAME` (required)")
	version := fs.String("version", "", "semantic `VERSION` X.Y.Z (required)")
	signKey := fs.String("sign-key", "", "private `KEY` file to sign the manifest with (from keygen)")
	var meta multiFlag
	fs.Var(&meta, "metadata", "free `k=v` metadata (training_run, parent_version, ...); repeatable")
	gs := &goldenSource{stderr: stderr}
	fs.StringVar(&gs.file, "golden", "", "golden `FILE` (golden.json: cases, expected outputs, tolerances) to store with the version")
	fs.StringVar(&gs.from, "golden-from", "", "`TOOL` computing the golden cases' expected outputs: onnxruntime")
	fs.StringVar(&gs.inputs, "golden-inputs", "", "`FILE` of observations for --golden-from (a golden file's cases, or a testdata/reference file); default: random ones")
	fs.IntVar(&gs.cases, "golden-cases", 4, "`N` random observations for --golden-from without --golden-inputs")
	fs.Uint64Var(&gs.seed, "golden-seed", 1, "`SEED` of the random observations")
	fs.StringVar(&gs.nodeModules, "node-modules", "", "`DIR` holding onnxruntime-node (default: tools/reference/node_modules or build/peers/node/node_modules here or above)")
	fs.StringVar(&gs.out, "golden-out", "", "also write the golden file --golden-from made to `FILE`")
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return fs.usageError(stderr, "want one MODEL.onnx, got %d arguments", len(pos))
	}
	switch {
	case gs.file != "" && gs.from != "":
		return fs.usageError(stderr, "--golden and --golden-from exclude each other")
	case gs.from != "" && gs.from != "onnxruntime":
		return fs.usageError(stderr, "--golden-from %q: want onnxruntime", gs.from)
	case gs.from == "" && (gs.inputs != "" || gs.out != ""):
		return fs.usageError(stderr, "--golden-inputs and --golden-out go with --golden-from onnxruntime")
	case gs.cases < 1 || gs.cases > 1000:
		return fs.usageError(stderr, "--golden-cases %d: want 1..1000", gs.cases)
	}
	if gs.file == "" && gs.from == "" {
		gs = nil
	}
	if *repo == "" || *name == "" || *version == "" {
		return fs.usageError(stderr, "--repository, --name and --version are required")
	}
	if err := artifacts.ValidateName(*name); err != nil {
		return fs.usageError(stderr, "--name: %v", err)
	}
	v, err := artifacts.CanonicalVersion(*version)
	if err != nil {
		return fs.usageError(stderr, "--version: %v", err)
	}
	metadata := map[string]string{}
	for _, kv := range meta {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fs.usageError(stderr, "--metadata %q: want k=v", kv)
		}
		metadata[k] = val
	}
	if len(metadata) == 0 {
		metadata = nil
	}
	req := artifacts.AddRequest{Name: *name, Version: v, Model: pos[0], Metadata: metadata, Tool: toolVersion()}
	if *signKey != "" {
		if req.SignKey, err = artifacts.LoadPrivateKey(*signKey); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
			return 1
		}
	}
	a, err := addVersionGolden(*repo, req, gs, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	signed := "unsigned"
	if a.SignedBy != "" {
		signed = "signed by " + a.SignedBy
	}
	fmt.Fprintf(stdout, "added %s %s (%s)\n  %s\n", a.Ref(), a.Digest, signed, a.Dir)
	if gs != nil {
		if g, err := a.Golden(); err == nil && g != nil {
			fmt.Fprintf(stdout, "  %s: %d golden cases\n", artifacts.GoldenFile, len(g.Cases))
		}
	}
	return 0
}

// addVersion is what artifacts add and import-triton do with one model file req.Model: read
// it and the external-data files it names (a missing, symlinked or escaping one is refused,
// naming it), check it loads through the engine (its signature goes into req.IO), remove
// what interrupted adds of the model left, and add it atomically (artifacts.Add).
func addVersion(repo string, req artifacts.AddRequest, stderr io.Writer) (*artifacts.Artifact, error) {
	return addVersionGolden(repo, req, nil, stderr)
}

// addVersionGolden is addVersion storing the golden file gs makes (nil: none) once the
// model's signature is known.
func addVersionGolden(repo string, req artifacts.AddRequest, gs *goldenSource, stderr io.Writer) (*artifacts.Artifact, error) {
	onnx, err := os.ReadFile(req.Model)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(onnx)
	req.ModelSHA256 = hex.EncodeToString(sum[:])
	external, err := artifacts.ReadExternalData(req.Model, onnx)
	if err != nil {
		return nil, err
	}
	for n, b := range external {
		if req.ExternalSHA256 == nil {
			req.ExternalSHA256 = map[string]string{}
		}
		s := sha256.Sum256(b)
		req.ExternalSHA256[n] = hex.EncodeToString(s[:])
	}
	if req.IO, err = inspect(onnx, external, req.Name+"@"+req.Version); err != nil {
		return nil, fmt.Errorf("%s: %w", req.Model, err)
	}
	if gs != nil {
		if req.Golden, err = gs.make(req.Model, req.IO); err != nil {
			return nil, err
		}
	}
	// What interrupted adds of this model left goes first (never the work of an add that runs).
	removed, err := artifacts.RemoveStale(repo, req.Name, artifacts.StaleAge, time.Now())
	for _, p := range removed {
		fmt.Fprintf(stderr, "note: removed %s, the work of an interrupted add\n", p)
	}
	if err != nil {
		fmt.Fprintf(stderr, "warning: %v\n", err)
	}
	return artifacts.Add(repo, req)
}

// reportFlags are the flags verify and report share.
func reportFlags(fs *configFlags) (repo *string, keys *multiFlag) {
	repo = fs.String("repository", "", "repository `DIR` (required)")
	keys = &multiFlag{}
	fs.Var(keys, "trusted-key", "public `KEY` file (from keygen): every version must be signed by one of them; repeatable")
	return repo, keys
}

// buildReport runs artifacts.Report for the positional NAME[@VERSION] selection; code >= 0
// means done.
func buildReport(fs *configFlags, stderr io.Writer, repo string, keys, pos []string) (*artifacts.RepositoryReport, int) {
	if repo == "" {
		return nil, fs.usageError(stderr, "--repository is required")
	}
	if len(pos) > 1 {
		return nil, fs.usageError(stderr, "want at most one NAME[@VERSION], got %d arguments", len(pos))
	}
	trusted, err := loadTrustedKeys(keys)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return nil, 1
	}
	opts := artifacts.ReportOptions{TrustedKeys: trusted}
	if len(pos) == 1 {
		opts.Model, opts.Version = splitRef(pos[0])
	}
	rep, err := artifacts.Report(repo, opts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return nil, 1
	}
	return rep, -1
}

const verifyAbout = `verify every file of every (or one) version; exit 1 on any problem
Checks each version folder of REPOSITORY (or of NAME, or NAME@VERSION): the manifest, each
listed file's size and sha256, no unlisted file, no symlink; with --trusted-key, a valid
signature by one of those keys. Prints "ok NAME@VERSION DIGEST" for each good version on
stdout and every problem, naming its file, on stderr; exits 1 if there is any problem.
With --golden DIR (a version folder REPOSITORY/NAME/VERSION), verifies that version, then runs
its golden cases offline on --backend (cpu by default; cuda or tensorrt on --device) and prints
each case's outputs with their max abs and rel error, tolerance and pass or FAIL; exits 1 when
any output leaves its tolerance or flips a discrete action.
`

func artifactsVerify(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "--repository DIR [NAME[@VERSION]] [--trusted-key PUB]... | --golden VERSION_DIR [--backend B] [--device N]", verifyAbout)
	repo, keys := reportFlags(fs)
	golden := fs.String("golden", "", "run the golden cases of the version folder `DIR` offline")
	backend := fs.String("backend", "cpu", "`BACKEND` the golden cases run on (with --golden): cpu, cuda, tensorrt")
	device := fs.Int("device", 0, "GPU `ORDINAL` of a GPU backend (with --golden)")
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if *golden != "" {
		if len(pos) > 0 || *repo != "" {
			return fs.usageError(stderr, "--golden takes the version folder; no --repository or NAME[@VERSION] with it")
		}
		return verifyGolden(*golden, *backend, *device, *keys, stdout, stderr)
	}
	rep, code := buildReport(fs, stderr, *repo, *keys, pos)
	if code >= 0 {
		return code
	}
	for _, m := range rep.Models {
		if m.Problem != "" {
			fmt.Fprintf(stderr, "%s: %s\n", m.Name, m.Problem)
		}
		for _, v := range m.Versions {
			if v.Err == nil {
				fmt.Fprintf(stdout, "ok %s@%s %s\n", m.Name, v.Version, v.Digest)
			}
			for _, p := range v.Problems {
				fmt.Fprintln(stderr, p)
			}
		}
	}
	for _, s := range rep.Stale {
		fmt.Fprintf(stderr, "note: %s is the work of a running or interrupted add (not a version); the next add of its model or the server removes it once an hour old\n", s)
	}
	if rep.Errors > 0 {
		fmt.Fprintf(stderr, "%d ok, %d with errors\n", rep.OK, rep.Errors)
		return 1
	}
	if rep.OK == 0 {
		fmt.Fprintln(stdout, "no versions")
	}
	return 0
}

const listAbout = `list models and versions with digest and status
One line per version: NAME, VERSION, STATUS (ok or error, after full verification without
trusted keys), DIGEST. Versions are sorted by semantic version. Exits 0 (see verify).
`

func artifactsList(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "--repository DIR", listAbout)
	repo := fs.String("repository", "", "repository `DIR` (required)")
	if code := fs.parseFlagsOnly(args, stdout, stderr, "repository"); code >= 0 {
		return code
	}
	models, err := artifacts.List(*repo)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	for _, m := range models {
		if m.Problem != "" {
			fmt.Fprintf(stdout, "%s\t-\terror\t-\n", m.Name)
		}
		for _, v := range m.Versions {
			d := v.Digest
			if d == "" {
				d = "-"
			}
			fmt.Fprintf(stdout, "%s\t%s\t%s\t%s\n", m.Name, v.Version, v.Status, d)
		}
	}
	return 0
}

const reportAbout = `integrity report: every model, version, file, digest, signer, status
Verifies every version of REPOSITORY (or of NAME, or NAME@VERSION) and prints, for each, its
status, digest, signer (verified against --trusted-key when given), creation time, tool,
metadata, files with sha256 and size, and every problem; then stale work folders of
interrupted adds. --format json prints the same as one JSON document. Exits 1 when any
version has a problem.
`

func artifactsReport(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "--repository DIR [NAME[@VERSION]] [--trusted-key PUB]... [--format text|json]", reportAbout)
	repo, keys := reportFlags(fs)
	format := fs.String("format", "text", "`FORMAT`: text or json")
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if *format != "text" && *format != "json" {
		return fs.usageError(stderr, "--format %q: want text or json", *format)
	}
	rep, code := buildReport(fs, stderr, *repo, *keys, pos)
	if code >= 0 {
		return code
	}
	write := rep.WriteText
	if *format == "json" {
		write = rep.WriteJSON
	}
	if err := write(stdout); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	if rep.Errors > 0 {
		return 1
	}
	return 0
}

const keygenAbout = `make an ed25519 signing key pair NAME.key and NAME.pub
Writes the private key NAME.key (mode 0600; keep it off the servers) and the public key
NAME.pub (give it to policyd as a trusted key, and to verify --trusted-key). Refuses to
overwrite either file. Prints the key ID that manifest.sig files signed with it carry.
`

func artifactsKeygen(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "--out NAME", keygenAbout)
	out := fs.String("out", "", "`NAME` of the key files, without .key/.pub (required)")
	if code := fs.parseFlagsOnly(args, stdout, stderr, "out"); code >= 0 {
		return code
	}
	pub, err := artifacts.GenerateKeyFiles(*out)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	fmt.Fprintf(stdout, "key %s: private %s.key, public %s.pub\n", artifacts.KeyID(pub), *out, *out)
	return 0
}

const signAbout = `sign a version's manifest (writes manifest.sig)
Verifies NAME@VERSION (a tampered version is not signed), then writes its manifest.sig: an
ed25519 signature of the exact manifest.json bytes by KEY, replacing any earlier one.
`

func artifactsSign(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "--repository DIR --key KEY NAME@VERSION", signAbout)
	repo := fs.String("repository", "", "repository `DIR` (required)")
	keyFile := fs.String("key", "", "private `KEY` file (from keygen; required)")
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return fs.usageError(stderr, "want one NAME@VERSION, got %d arguments", len(pos))
	}
	if *repo == "" || *keyFile == "" {
		return fs.usageError(stderr, "--repository and --key are required")
	}
	name, version := splitRef(pos[0])
	if err := artifacts.ValidateName(name); err != nil {
		return fs.usageError(stderr, "%v", err)
	}
	v, err := artifacts.CanonicalVersion(version)
	if err != nil {
		return fs.usageError(stderr, "want NAME@VERSION: %v", err)
	}
	key, err := artifacts.LoadPrivateKey(*keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	a, err := artifacts.Sign(filepath.Join(*repo, name, v), key)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	fmt.Fprintf(stdout, "signed %s %s with key %s\n", a.Ref(), a.Digest, a.SignedBy)
	return 0
}

const migrateAbout = `rewrite schema-1 manifests as schema 2
Finds every version whose manifest.json is of schema 1 ({"name","version","model","sha256"}),
checks model.onnx against its sha256, and writes a schema-2 manifest (size, the model's
inputs and outputs as the engine reports them, creation time, tool). A manifest.sig of the old
manifest no longer matches and is removed: sign those versions again. Versions of schema 2 are
left alone. Exits 1 if any version could not be migrated.
`

func artifactsMigrate(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "--repository DIR", migrateAbout)
	repo := fs.String("repository", "", "repository `DIR` (required)")
	if code := fs.parseFlagsOnly(args, stdout, stderr, "repository"); code >= 0 {
		return code
	}
	opts := artifacts.MigrateOptions{Tool: toolVersion()}
	if err := bridge.Available(); err == nil {
		opts.Inspect = func(b []byte) (artifacts.IO, error) { return inspect(b, nil, "migrate") }
	} else {
		fmt.Fprintf(stderr, "%s: warning: engine unavailable (%v): manifests get an empty io\n", fs.name, err)
	}
	ms, err := artifacts.Migrate(*repo, opts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	failed := 0
	for _, m := range ms {
		if m.Err != nil {
			failed++
			fmt.Fprintln(stderr, m.Err)
			continue
		}
		fmt.Fprintf(stdout, "migrated %s %s\n", m.Ref, m.Digest)
		if m.Unsigned {
			name, version := splitRef(m.Ref)
			fmt.Fprintf(stdout, "  its manifest.sig signed the old manifest and was removed; sign it again:\n"+
				"  policyctl artifacts sign --repository %s --key KEY %s@%s\n", *repo, name, version)
		}
	}
	if len(ms) == 0 {
		fmt.Fprintln(stdout, "nothing to migrate")
	}
	if failed > 0 {
		return 1
	}
	return 0
}

const rollbackAbout = `switch a running server's default version of a model
POSTs {"version":"X.Y.Z"} to SERVER/v2/admin/models/NAME/default, with the bearer token of
--token-file when given, and prints the server's answer. The server switches atomically;
requests in flight finish on the version they started on. Exits 1 unless the server says 2xx.
`

func artifactsRollback(ctx context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "NAME --to X.Y.Z [--server URL] [--token-file F]", rollbackAbout)
	to := fs.String("to", "", "`VERSION` to make the default (required)")
	server := fs.String("server", "http://127.0.0.1:8000", "policyd base `URL`")
	tokenFile := fs.String("token-file", "", "`FILE` holding the admin bearer token")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after `D`")
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return fs.usageError(stderr, "want one model NAME, got %d arguments", len(pos))
	}
	if err := artifacts.ValidateName(pos[0]); err != nil {
		return fs.usageError(stderr, "%v", err)
	}
	if *to == "" {
		return fs.usageError(stderr, "--to is required")
	}
	v, err := artifacts.CanonicalVersion(*to)
	if err != nil {
		return fs.usageError(stderr, "--to: %v", err)
	}
	body, _ := json.Marshal(map[string]string{"version": v})
	answer, ok, usage := adminCall(ctx, fs.name, http.MethodPost, *server, "/v2/admin/models/"+url.PathEscape(pos[0])+"/default",
		*tokenFile, *timeout, 1<<20, body, stderr)
	if usage {
		return fs.usageError(stderr, "--server %q: want http(s)://HOST[:PORT]", *server)
	}
	if !ok {
		return 1
	}
	stdout.Write(bytes.TrimSpace(answer))
	fmt.Fprintln(stdout)
	return 0
}
