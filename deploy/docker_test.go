package deploy

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

const (
	cpuDockerfile = "../docker/Dockerfile"
	gpuDockerfile = "../docker/Dockerfile.gpu"
	// imageUID is the user the images run as; the Kubernetes and compose files run them as it.
	imageUID = 65532
	// dockerSecrets is the folder where Docker (compose's secrets:) mounts secrets.
	dockerSecrets = "/run/secrets/"
)

// dockerfile is a parsed Dockerfile: its stages as BuildKit reads them, the default values of
// its global ARGs, and every warning BuildKit's parser and linter gave.
type dockerfile struct {
	path     string
	stages   []instructions.Stage
	args     map[string]string
	warnings []string
}

func parseDockerfile(t *testing.T, path string) *dockerfile {
	t.Helper()
	res, err := parser.Parse(bytes.NewReader(readFile(t, path)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	df := &dockerfile{path: path, args: map[string]string{}}
	for _, w := range res.Warnings {
		df.warnings = append(df.warnings, fmt.Sprintf("line %d: %s", w.Location.Start.Line, w.Short))
	}
	// The BuildKit lint rules (docker build --check) that run while parsing: FROM ... AS and
	// stage-name casing, deprecated MAINTAINER, definition descriptions. The others run in
	// BuildKit's LLB conversion, which would bring containerd and gRPC into this module; the
	// ones that matter here are checked below (casing, exec form, undefined ARG in FROM).
	for _, n := range res.AST.Children {
		if word, _, _ := strings.Cut(strings.TrimSpace(n.Original), " "); word != strings.ToUpper(word) {
			df.warnings = append(df.warnings, fmt.Sprintf("line %d: instruction %q: write instructions in capitals", n.StartLine, word))
		}
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		df.warnings = append(df.warnings, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	df.stages = stages
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if kv.Value != nil {
				df.args[kv.Key] = *kv.Value
			}
		}
	}
	if len(df.stages) == 0 {
		t.Fatalf("%s: no stage", path)
	}
	return df
}

// base is the stage's base image with the global ARGs' defaults substituted; an ARG without
// a default is an error.
func (df *dockerfile) base(s instructions.Stage) (string, error) {
	var err error
	image := os.Expand(s.BaseName, func(k string) string {
		v, ok := df.args[k]
		if !ok && err == nil {
			err = fmt.Errorf("FROM %s: ARG %s has no default before the first FROM", s.BaseName, k)
		}
		return v
	})
	return image, err
}

func (df *dockerfile) mustBase(t *testing.T, s instructions.Stage) string {
	t.Helper()
	b, err := df.base(s)
	if err != nil {
		t.Fatalf("%s: %v", df.path, err)
	}
	return b
}

func (df *dockerfile) final() instructions.Stage { return df.stages[len(df.stages)-1] }

func commandsOf[C any](s instructions.Stage) []C {
	var out []C
	for _, c := range s.Commands {
		if v, ok := c.(C); ok {
			out = append(out, v)
		}
	}
	return out
}

// pinned: a registry image named with an explicit tag other than latest, or a digest.
var pinnedImage = regexp.MustCompile(`^[a-z0-9./_-]+(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[0-9a-f]{64})?$`)

func checkPinned(image string) error {
	m := pinnedImage.FindStringSubmatch(image)
	switch {
	case m == nil:
		return fmt.Errorf("%q is not an image reference", image)
	case m[1] == "" && m[2] == "":
		return fmt.Errorf("%q has neither a tag nor a digest: pin one", image)
	case m[1] == ":latest" && m[2] == "":
		return fmt.Errorf("%q is pinned to latest, which moves: name a version", image)
	}
	return nil
}

func TestPinnedImage(t *testing.T) {
	for image, ok := range map[string]bool{
		"debian:12-slim": true, "golang:1.26-bookworm": true, "nvcr.io/nvidia/tensorrt:25.06-py3": true,
		"debian@sha256:" + strings.Repeat("a", 64): true,
		"debian": false, "debian:latest": false, "nvcr.io/nvidia/tensorrt": false, "${X}": false,
	} {
		if err := checkPinned(image); (err == nil) != ok {
			t.Errorf("checkPinned(%q) = %v, want ok=%v", image, err, ok)
		}
	}
}

func TestDockerfiles(t *testing.T) {
	ignore := dockerignore(t)
	for _, path := range []string{cpuDockerfile, gpuDockerfile} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			df := parseDockerfile(t, path)
			for _, w := range df.warnings {
				t.Errorf("%s: %s", path, w)
			}
			stages := map[string]bool{}
			for _, s := range df.stages {
				base, err := df.base(s)
				if err != nil {
					t.Errorf("%s: %v", path, err)
				}
				if !stages[base] {
					if err := checkPinned(base); err != nil {
						t.Errorf("%s: FROM %s: %v", path, s.BaseName, err)
					}
				}
				if s.Name != "" {
					stages[s.Name] = true
				}
				for _, add := range commandsOf[*instructions.AddCommand](s) {
					t.Errorf("%s: line %d: ADD %v: use COPY (and curl with a checksum for a download)", path, add.Location()[0].Start.Line, add.SourcePaths)
				}
				for _, c := range commandsOf[*instructions.CopyCommand](s) {
					if c.From != "" {
						if !stages[c.From] {
							t.Errorf("%s: COPY --from=%s: no earlier stage of that name", path, c.From)
						}
						continue
					}
					for _, src := range c.SourcePaths {
						checkContextPath(t, path, src, ignore)
					}
				}
				for _, run := range commandsOf[*instructions.RunCommand](s) {
					checkAptRun(t, path, run)
				}
			}
			final := df.final()
			users := commandsOf[*instructions.UserCommand](final)
			if len(users) == 0 {
				t.Errorf("%s: the final stage has no USER: the image would run as root", path)
			} else if u := users[len(users)-1].User; u != fmt.Sprintf("%d:%d", imageUID, imageUID) {
				t.Errorf("%s: USER %s, want %d:%d (numeric, so runAsNonRoot can check it; deploy/ runs the image as it)", path, u, imageUID, imageUID)
			}
			hcs := commandsOf[*instructions.HealthCheckCommand](final)
			if len(hcs) != 1 || hcs[0].Health == nil || len(hcs[0].Health.Test) < 2 {
				t.Errorf("%s: the final stage needs one HEALTHCHECK CMD", path)
			} else if hcs[0].Health.Test[0] != "CMD" {
				t.Errorf("%s: HEALTHCHECK %v: use the exec form (CMD [...]), no shell", path, hcs[0].Health.Test)
			} else if test := strings.Join(hcs[0].Health.Test, " "); !strings.Contains(test, "http://127.0.0.1:8000/v2/health/ready") {
				t.Errorf("%s: HEALTHCHECK %s does not ask http://127.0.0.1:8000/v2/health/ready", path, test)
			}
			var exposed []string
			for _, e := range commandsOf[*instructions.ExposeCommand](final) {
				exposed = append(exposed, e.Ports...)
			}
			if !slices.Contains(exposed, "8000") || !slices.Contains(exposed, "8001") {
				t.Errorf("%s: EXPOSE %v, want 8000 (HTTP) and 8001 (gRPC)", path, exposed)
			}
			var volumes []string
			for _, v := range commandsOf[*instructions.VolumeCommand](final) {
				volumes = append(volumes, v.Volumes...)
			}
			if !slices.Contains(volumes, "/models") {
				t.Errorf("%s: VOLUME %v, want /models (the model repository)", path, volumes)
			}
			cmd := imageCmd(t, df)
			files := map[string]string{}
			for _, c := range commandsOf[*instructions.CopyCommand](final) {
				if c.From == "" && strings.HasPrefix(c.DestPath, "/etc/policyd/") {
					files[c.DestPath] = string(readFile(t, filepath.Join(repoRoot, c.SourcePaths[0])))
				}
			}
			env := map[string]string{}
			for _, e := range commandsOf[*instructions.EnvCommand](final) {
				for _, kv := range e.Env {
					if strings.HasPrefix(kv.Key, "POLICYD_") {
						env[kv.Key] = kv.Value
					}
				}
			}
			// the admin token is never in the image: it is mounted at run time where Docker
			// puts secrets (compose's secrets:, or docker run -v ...:/run/secrets/...:ro)
			if tok := adminTokenFile(t, cmd[1:], env, files); tok != "" {
				if !strings.HasPrefix(tok, dockerSecrets) {
					t.Errorf("%s: admin.token_file %s: want a file under %s, where compose mounts its secrets", path, tok, dockerSecrets)
				}
				files[tok] = "test-token\n"
			}
			cfg := checkPolicydConfig(t, cmd[1:], env, files, "/models")
			if !strings.HasSuffix(cfg.Server.Addr, ":8000") || strings.HasPrefix(cfg.Server.Addr, "127.") {
				t.Errorf("%s: the image's config listens on %q; a container must listen on every interface, port 8000", path, cfg.Server.Addr)
			}
			checkGRPCListen(t, path, cfg, 8001)
		})
	}
}

// imageCmd is the command the image runs: ENTRYPOINT + CMD of the final stage, exec form.
func imageCmd(t *testing.T, df *dockerfile) []string {
	t.Helper()
	var cmd []string
	for _, c := range df.final().Commands {
		switch c := c.(type) {
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				t.Errorf("%s: ENTRYPOINT %v: use the exec form, so that policyd gets SIGTERM", df.path, c.CmdLine)
			}
			cmd = slices.Clone(c.CmdLine)
		case *instructions.CmdCommand:
			if c.PrependShell {
				t.Errorf("%s: CMD %v: use the exec form, so that policyd gets SIGTERM", df.path, c.CmdLine)
			}
			cmd = append(cmd, c.CmdLine...)
		}
	}
	if len(cmd) == 0 || cmd[0] != "/opt/policyd/bin/policyd" {
		t.Fatalf("%s: the image runs %q, want /opt/policyd/bin/policyd ...", df.path, cmd)
	}
	return cmd
}

// checkAptRun: a RUN that installs Debian packages updates the lists first, installs without
// prompts or recommended packages, and removes the lists in the same layer.
func checkAptRun(t *testing.T, path string, run *instructions.RunCommand) {
	t.Helper()
	line := strings.Join(run.CmdLine, " ")
	if !strings.Contains(line, "apt-get install") {
		if strings.Contains(line, "apt install") {
			t.Errorf("%s: RUN %s: use apt-get in scripts, not apt", path, line)
		}
		return
	}
	for _, want := range []string{"apt-get update", "--no-install-recommends", " -y", "rm -rf /var/lib/apt/lists/*"} {
		if !strings.Contains(line, want) {
			t.Errorf("%s: RUN %s: missing %q in the same RUN", path, line, want)
		}
	}
}

func dockerignore(t *testing.T) *patternmatcher.PatternMatcher {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	return pm
}

// checkContextPath: a COPY source exists in the build context (the repository root) and
// .dockerignore does not leave it out.
func checkContextPath(t *testing.T, dockerfile, src string, ignore *patternmatcher.PatternMatcher) {
	t.Helper()
	if src == "." {
		return
	}
	if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
		t.Errorf("%s: COPY %s: not in the build context: %v", dockerfile, src, err)
		return
	}
	if skip, err := ignore.MatchesOrParentMatches(path.Clean(src)); err != nil || skip {
		t.Errorf("%s: COPY %s: .dockerignore leaves it out of the build context (%v)", dockerfile, src, err)
	}
}

func TestDockerignoreKeepsSourcesOut(t *testing.T) {
	ignore := dockerignore(t)
	for p, want := range map[string]bool{
		"build/lib/libpolicyd.so": true, "lib/libpolicyd.so": true, "bin/policyd": true, ".git/HEAD": true,
		"server.test": true, "bridge/testdata/x": true,
		"go.mod": false, "csrc/core/capi.cpp": false, "cmd/policyd/main.go": false, "docker/policyd.yaml": false,
		"examples/repository/3DBall/1.0.0/model.onnx": false, "CMakeLists.txt": false,
	} {
		got, err := ignore.MatchesOrParentMatches(p)
		if err != nil || got != want {
			t.Errorf(".dockerignore excludes %s: %v (%v), want %v", p, got, err, want)
		}
	}
}

// aptPackages lists the packages the RUN apt-get install commands of a stage install.
func aptPackages(s instructions.Stage) []string {
	var out []string
	for _, run := range commandsOf[*instructions.RunCommand](s) {
		line := strings.Join(run.CmdLine, " ")
		i := strings.Index(line, "apt-get install")
		if i < 0 {
			continue
		}
		for _, w := range strings.Fields(line[i+len("apt-get install"):]) {
			if w == "&&" || w == ";" {
				break
			}
			if !strings.HasPrefix(w, "-") && w != "\\" {
				out = append(out, w)
			}
		}
	}
	return out
}

// neededPackages maps every library that the built native files (lib/, from make build) load
// directly to the Debian package that holds it on this Debian 12 machine.
func neededPackages(t *testing.T) map[string]string {
	t.Helper()
	libs := []string{"../lib/libpolicyd.so", "../lib/libpolicyd_backend_cpu.so"}
	for _, l := range libs {
		if _, err := os.Stat(l); err != nil {
			t.Skipf("%s is not built (make native builds it): %v", l, err)
		}
	}
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("no dpkg-query: not a Debian machine")
	}
	out := map[string]string{}
	for _, l := range libs {
		f, err := elf.Open(l)
		if err != nil {
			t.Fatal(err)
		}
		needed, err := f.ImportedLibraries()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, so := range needed {
			if so == "libpolicyd.so" {
				continue
			}
			b, err := exec.Command("dpkg-query", "-S", "*/"+so).Output()
			if err != nil {
				t.Fatalf("which package holds %s (needed by %s)? dpkg-query: %v", so, l, err)
			}
			pkg, _, _ := strings.Cut(strings.Fields(string(b))[0], ":")
			out[so] = pkg
		}
	}
	return out
}

// TestRuntimeLibraries: the runtime stage of the CPU image installs the package of every
// library the native build links, and the GPU image carries the Debian-only ones over.
func TestRuntimeLibraries(t *testing.T) {
	needed := neededPackages(t)
	// in debian:12-slim already, and in the Ubuntu of NVIDIA's images under the same names
	base := []string{"libc6", "libstdc++6", "libgcc-s1", "zlib1g"}
	cpu := parseDockerfile(t, cpuDockerfile)
	installed := aptPackages(cpu.final())
	gpu := parseDockerfile(t, gpuDockerfile)
	gpuInstalled := aptPackages(gpu.final())
	copied := readFile(t, gpuDockerfile)
	for so, pkg := range needed {
		if !slices.Contains(base, pkg) && !slices.Contains(installed, pkg) {
			t.Errorf("%s: the runtime stage does not install %s (%s); it installs %v", cpuDockerfile, pkg, so, installed)
		}
		if !slices.Contains(base, pkg) && !slices.Contains(gpuInstalled, pkg) && !bytes.Contains(copied, []byte(" "+so)) {
			t.Errorf("%s: %s (%s) is neither installed in the runtime stage nor copied from the Debian stage", gpuDockerfile, so, pkg)
		}
	}
	t.Logf("native libraries: %v", needed)
}

// TestDebianRelease: the CPU image's build and runtime stages are the same Debian release, so
// the libraries the build links are the ones the runtime installs.
func TestDebianRelease(t *testing.T) {
	df := parseDockerfile(t, cpuDockerfile)
	build, runtime := df.mustBase(t, df.stages[0]), df.mustBase(t, df.final())
	if !strings.HasSuffix(build, "-bookworm") || !strings.HasPrefix(runtime, "debian:12") {
		t.Errorf("%s: build on %s, run on %s: both must be Debian 12 (bookworm)", cpuDockerfile, build, runtime)
	}
	gpu := parseDockerfile(t, gpuDockerfile)
	if b := gpu.mustBase(t, gpu.stages[0]); b != build {
		t.Errorf("%s builds the native part on %s, %s on %s: keep them the same", gpuDockerfile, b, cpuDockerfile, build)
	}
	for _, s := range gpu.stages[1:] {
		if b := gpu.mustBase(t, s); !strings.HasPrefix(b, "nvcr.io/nvidia/tensorrt:") || !strings.HasSuffix(b, "-py3") {
			t.Errorf("%s: stage %q on %s, want NVIDIA's TensorRT container nvcr.io/nvidia/tensorrt:<yy.mm>-py3", gpuDockerfile, s.Name, b)
		}
	}
}
