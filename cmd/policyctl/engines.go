package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
)

// enginesCommands is the `policyctl engines` group: engine caches in the repository.
func enginesCommands() []*command {
	return []*command{
		{name: "build", short: "build the engine caches of every (or one) model for each local GPU architecture", run: enginesBuild},
	}
}

const enginesBuildAbout = `build the engine caches of every (or one) model for each local GPU architecture
For each GPU backend that loads on this machine (cuda; tensorrt when it exists) and each GPU
architecture it finds (one GPU per sm_XX), builds the engine of every version of every model
(or of --model NAME[@VERSION]) and stores it in the version's artifact under
engines/<backend>-<backend version>/<sm_XX>/ (engine.bin and engine.json, listed in the
manifest with their sha256, bound to model.onnx, the backend's version and the target). A
version whose matching cache is there already is left alone unless --force. A model the
backend cannot run (an op it lacks) is skipped: the server runs it on the next backend.

Adding a cache rewrites the version's manifest.json, so its digest changes: update the
models[].digest pins of the versions built (the new digests are printed). A signed version
is signed again with --sign-key and refused without it.

On a machine without a usable GPU backend it says so and builds nothing (exit 0).
Exit status: 0 when every build succeeded, 1 when one failed, 2 on usage errors.
`

// gpuTarget is one architecture of one backend: the first GPU that has it.
type gpuTarget struct {
	backend, version string
	device           bridge.Device
}

func enginesBuild(ctx context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "--repository DIR [--model NAME[@VERSION]] [--backend-dir DIR] [--sign-key KEY] [--force]", enginesBuildAbout)
	repo := fs.String("repository", "", "repository `DIR` (required)")
	model := fs.String("model", "", "only this model `NAME[@VERSION]` (default: every model)")
	backendDir := fs.String("backend-dir", "", "`DIR` of the backend plugins (default: beside libpolicyd)")
	signKey := fs.String("sign-key", "", "private `KEY` file to sign the new manifests with (required for signed versions)")
	force := fs.Bool("force", false, "rebuild caches that are already there")
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		return fs.usageError(stderr, "unexpected argument %q", pos[0])
	}
	if *repo == "" {
		return fs.usageError(stderr, "--repository is required")
	}
	var key ed25519.PrivateKey
	if *signKey != "" {
		k, err := artifacts.LoadPrivateKey(*signKey)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
			return 1
		}
		key = k
	}
	refs, err := versionsToBuild(*repo, *model)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}

	rt, err := bridge.NewRuntime(*backendDir)
	if err != nil {
		fmt.Fprintf(stderr, "%s: engine: %v\n", fs.name, err)
		return 1
	}
	defer rt.Close()
	targets, why := localTargets(rt)
	if len(targets) == 0 {
		fmt.Fprintf(stdout, "nothing to build: no GPU backend can build engines on this machine (%s)\n", why)
		return 0
	}
	for _, t := range targets {
		fmt.Fprintf(stdout, "target %s-%s %s on GPU %d (%s)\n", t.backend, t.version, t.device.Target, t.device.Ordinal, t.device.Name)
	}

	n := len(refs) * len(targets)
	var built, upToDate, skipped, failed int
	var changed []string
	i := 0
	for _, ref := range refs {
		for _, t := range targets {
			if ctx.Err() != nil {
				fmt.Fprintf(stderr, "%s: interrupted\n", fs.name)
				return 1
			}
			i++
			line := fmt.Sprintf("[%d/%d] %s@%s %s %s", i, n, ref[0], ref[1], t.backend, t.device.Target)
			res, digest, err := buildOne(rt, filepath.Join(*repo, ref[0], ref[1]), t, key, *force)
			switch {
			case err != nil:
				failed++
				fmt.Fprintf(stdout, "%s: FAILED: %v\n", line, err)
			case res == "up to date":
				upToDate++
				fmt.Fprintf(stdout, "%s: %s\n", line, res)
			case strings.HasPrefix(res, "skipped"):
				skipped++
				fmt.Fprintf(stdout, "%s: %s\n", line, res)
			default:
				built++
				changed = append(changed, fmt.Sprintf("%s@%s %s", ref[0], ref[1], digest))
				fmt.Fprintf(stdout, "%s: %s\n", line, res)
			}
		}
	}
	fmt.Fprintf(stdout, "built %d, up to date %d, skipped %d, failed %d\n", built, upToDate, skipped, failed)
	if len(changed) > 0 {
		fmt.Fprintf(stdout, "new digests (update the models[].digest pins of these versions):\n")
		for _, c := range changed {
			fmt.Fprintf(stdout, "  %s\n", c)
		}
	}
	if failed > 0 {
		return 1
	}
	return 0
}

// versionsToBuild lists {model, version} of the repository, or of the model NAME[@VERSION].
func versionsToBuild(repo, only string) ([][2]string, error) {
	var models []string
	name, version := splitRef(only)
	if only != "" {
		if err := artifacts.ValidateName(name); err != nil {
			return nil, err
		}
		models = []string{name}
	} else {
		ms, err := artifacts.Models(repo)
		if err != nil {
			return nil, err
		}
		models = ms
	}
	var out [][2]string
	for _, m := range models {
		vs, err := artifacts.Versions(repo, m)
		if err != nil {
			return nil, err
		}
		if version != "" {
			c, err := artifacts.CanonicalVersion(version)
			if err != nil {
				return nil, err
			}
			if !slices.Contains(vs, c) {
				return nil, fmt.Errorf("no version %s of %s in %s (found: %s)", c, m, repo, strings.Join(vs, ", "))
			}
			vs = []string{c}
		}
		if only != "" && len(vs) == 0 {
			return nil, fmt.Errorf("no version of %s in %s", m, repo)
		}
		for _, v := range vs {
			out = append(out, [2]string{m, v})
		}
	}
	return out, nil
}

// localTargets lists one GPU per architecture of every GPU backend that loaded, or why there
// is none.
func localTargets(rt *bridge.Runtime) ([]gpuTarget, string) {
	var out []gpuTarget
	var why []string
	for _, b := range rt.Backends() {
		if b.Name == "cpu" {
			continue
		}
		if !b.Available {
			why = append(why, b.Name+": "+b.Reason)
			continue
		}
		devs, err := rt.Devices(b.Name)
		if err != nil || len(devs) == 0 {
			why = append(why, fmt.Sprintf("%s: no device (%v)", b.Name, err))
			continue
		}
		seen := map[string]bool{}
		for _, d := range devs {
			if !seen[d.Target] {
				seen[d.Target] = true
				out = append(out, gpuTarget{backend: b.Name, version: b.Version, device: d})
			}
		}
	}
	if len(why) == 0 {
		why = []string{"no GPU backend plugin found"}
	}
	return out, strings.Join(why, "; ")
}

// buildOne builds and stores the cache of one version for one target. It returns what it did
// ("up to date", "skipped: …", or the built line) and the artifact's new digest.
func buildOne(rt *bridge.Runtime, dir string, t gpuTarget, key ed25519.PrivateKey, force bool) (string, string, error) {
	a, err := artifacts.Verify(dir, artifacts.VerifyOptions{})
	if err != nil {
		return "", "", err
	}
	if _, data, err := a.EngineCache(t.backend, t.version, t.device.Target, ""); err == nil && data != nil && !force {
		return "up to date", "", nil
	}
	onnx, err := a.ReadFile(artifacts.ModelFile)
	if err != nil {
		return "", "", err
	}
	sum := a.Manifest.File(artifacts.ModelFile).SHA256
	start := time.Now()
	e, err := rt.NewEngine(onnx, bridge.EngineOptions{Backend: t.backend, Device: t.device.Ordinal,
		ModelDigest: "sha256:" + sum, Name: a.Ref()})
	if errors.Is(err, &bridge.Error{Code: bridge.CodeUnsupported}) {
		return "skipped: " + err.Error() + " (the server runs it on its next backend)", "", nil
	}
	if err != nil {
		return "", "", err
	}
	data, err := e.Serialize()
	e.Close()
	if err != nil {
		return "", "", fmt.Errorf("serialize: %w", err)
	}
	took := time.Since(start)
	b, err := artifacts.AddEngineCache(dir, artifacts.AddEngineRequest{
		Backend: t.backend, BackendVersion: t.version, Target: t.device.Target, Device: t.device.Name,
		Data: data, ModelSHA256: sum, SignKey: key, Builder: toolVersion(),
	})
	if err != nil {
		return "", "", err
	}
	return fmt.Sprintf("built %s in %.1f ms (%s), digest %s", formatBytes(len(data)), took.Seconds()*1000,
		artifacts.EngineCacheDir(t.backend, t.version, t.device.Target), b.Digest), b.Digest, nil
}

func formatBytes(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
