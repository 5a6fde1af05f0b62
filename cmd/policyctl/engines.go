package main

import (
	"context"
	"fmt"
	"io"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/repository"
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
version whose matching cache is there already (the backend accepts it) is left alone unless
--force. A model the backend cannot run (an op it lacks) is skipped: the server runs it on
the next backend.

Each engine is built with the batch profile and backend parameters the servers will build it
with (tensorrt binds both into its cache and refuses a cache made with others): those of
--config FILE [--profile P] (batching, models[].batching, engine.backend_parameters,
models[].backend_parameters; the file and overlay alone, as policyctl config validate reads
them without --env), else of the default config. A timing.cache in the cache's folder is
passed to the build, and the one the build leaves (tensorrt) is stored there beside
engine.bin, listed in the manifest the same way; a backend that leaves none (cuda) leaves the
folder's own as it was.

Adding a cache rewrites the version's manifest.json, so its digest changes: update the
models[].digest pins of the versions built (the new digests are printed). A signed version
is signed again with --sign-key and refused without it.

On a machine without a usable GPU backend it says so and builds nothing (exit 0).
Exit status: 0 when every build succeeded, 1 when one failed, 2 on usage errors.
`

func enginesBuild(ctx context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "--repository DIR [--config FILE [--profile P]] [--model NAME[@VERSION]] [--backend-dir DIR] [--sign-key KEY] [--force]", enginesBuildAbout)
	repo := fs.String("repository", "", "repository `DIR` (required unless --config gives repository.path)")
	cfgFile := fs.String("config", "", "the servers' config `FILE`: the batch profile and backend parameters of each version (default: the default config)")
	profile := fs.String("profile", "", "`PROFILE` overlay of --config")
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
	if *profile != "" && *cfgFile == "" {
		return fs.usageError(stderr, "--profile needs --config")
	}
	cfg := config.Defaults()
	if *cfgFile != "" {
		c, _, err := config.Load(loadOptions(*cfgFile, *profile, false))
		if err != nil {
			fmt.Fprintf(stderr, "%s: %s: %v\n", fs.name, describeFile(*cfgFile, *profile), err)
			return 1
		}
		cfg = c
		if *repo == "" {
			*repo = c.Repository.Path
		}
	}
	if *repo == "" {
		return fs.usageError(stderr, "--repository is required")
	}
	o := repository.BuildOptions{Repository: *repo, Model: *model, Force: *force, Builder: toolVersion(),
		Stop: func() bool { return ctx.Err() != nil }, Serving: servingDesired(cfg)}
	if *signKey != "" {
		k, err := artifacts.LoadPrivateKey(*signKey)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
			return 1
		}
		o.SignKey = k
	}
	if _, err := repository.BuildVersions(*repo, *model); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	rt, err := bridge.NewRuntime(*backendDir)
	if err != nil {
		fmt.Fprintf(stderr, "%s: engine: %v\n", fs.name, err)
		return 1
	}
	defer rt.Close()
	targets, why := repository.BuildTargets(rt)
	if len(targets) == 0 {
		fmt.Fprintf(stdout, "nothing to build: no GPU backend can build engines on this machine (%s)\n", why)
		return 0
	}
	for _, t := range targets {
		fmt.Fprintf(stdout, "target %s-%s %s on GPU %d (%s)\n", t.Backend, t.BackendVersion, t.Device.Target, t.Device.Ordinal, t.Device.Name)
	}
	count := map[string]int{}
	var changed []string
	o.Progress = func(s repository.BuildStep) {
		count[s.Outcome]++
		line := fmt.Sprintf("[%d/%d] %s@%s %s %s: ", s.Index, s.Total, s.Model, s.Version, s.Target.Backend, s.Target.Device.Target)
		switch s.Outcome {
		case repository.Built:
			changed = append(changed, fmt.Sprintf("%s@%s %s", s.Model, s.Version, s.Digest))
			line += fmt.Sprintf("built %s in %.1f ms (%s), digest %s", formatBytes(s.Bytes), s.Took.Seconds()*1000, s.Dir, s.Digest)
			if s.TimingBytes > 0 {
				line += fmt.Sprintf(", timing cache %s", formatBytes(s.TimingBytes))
			}
		case repository.UpToDate:
			line += "up to date"
		case repository.Skipped:
			line += "skipped: " + s.Detail + " (the server runs it on its next backend)"
		default:
			line += "FAILED: " + s.Detail
		}
		fmt.Fprintln(stdout, line)
	}
	if _, err := repository.BuildEngineCaches(rt, targets, o); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	fmt.Fprintf(stdout, "built %d, up to date %d, skipped %d, failed %d\n",
		count[repository.Built], count[repository.UpToDate], count[repository.Skipped], count[repository.Failed])
	if len(changed) > 0 {
		fmt.Fprintf(stdout, "new digests (update the models[].digest pins of these versions):\n")
		for _, c := range changed {
			fmt.Fprintf(stdout, "  %s\n", c)
		}
	}
	if count[repository.Failed] > 0 {
		return 1
	}
	return 0
}

// servingDesired is what of the servers' config decides how each version's engine is built:
// batching (the batch profile) and backend parameters, per model as policyd applies them
// (cmd/policyd's desired makes the same from the same keys).
func servingDesired(c *config.Config) repository.Desired {
	spec := func(b config.ModelBatching) repository.BatchingSpec {
		return repository.BatchingSpec{MaxBatchSize: b.MaxBatchSize, PreferredBatchSizes: b.PreferredBatchSizes}
	}
	d := repository.Desired{Batching: c.Batching.Enabled, Default: repository.ModelSpec{
		Params:   c.Engine.BackendParameters,
		Batching: repository.BatchingSpec{MaxBatchSize: c.Batching.MaxBatchSize, PreferredBatchSizes: c.Batching.PreferredBatchSizes},
	}}
	for _, m := range c.Models {
		d.Models = append(d.Models, repository.ModelSpec{Name: m.Name, Version: m.Version, Params: m.BackendParameters, Batching: spec(m.Batching)})
	}
	return d
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
