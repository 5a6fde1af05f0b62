package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/policyd/policyd/config"
)

// configCommands is the `policyctl config` group.
func configCommands() []*command {
	return []*command{
		{name: "validate", short: "check a config file (and profile overlay); print ok or every problem", run: configValidate},
		{name: "schema", short: "print the JSON Schema of a config file", run: configSchema},
		{name: "diff", short: "show what changes from config A to config B, and which changes need a restart", run: configDiff},
	}
}

// configFlags is a flag set whose usage names the command, with --help answered on stdout.
type configFlags struct {
	*flag.FlagSet
	name string
}

func newConfigFlags(path []string, stderr io.Writer, synopsis, about string) *configFlags {
	name := strings.Join(path, " ")
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s — %s\n\nUsage:\n  %s %s\n\n", name, about[:strings.Index(about, "\n")], name, synopsis)
		fmt.Fprint(w, about[strings.Index(about, "\n")+1:])
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprint(w, "\nFlags:\n")
			fs.PrintDefaults()
		}
	}
	return &configFlags{fs, name}
}

// parse parses flags anywhere among the arguments (validate FILE --profile prod) and returns
// the positional ones. It returns the exit status when the command is done (help: 0, bad
// flags: 2) and -1 to go on.
func (fs *configFlags) parse(args []string, stdout io.Writer) ([]string, int) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if isHelp(a) {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, 0
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, 0
			}
			return nil, 2
		}
		if fs.NArg() == 0 {
			return pos, -1
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseFlagsOnly parses a command that takes flags and no positional arguments, and whose
// flags named in required must be set. It returns the exit status when the command is done
// (help, bad flags, arguments, a missing flag) and -1 to go on.
func (fs *configFlags) parseFlagsOnly(args []string, stdout, stderr io.Writer, required ...string) int {
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		return fs.usageError(stderr, "unexpected arguments %q", pos)
	}
	for _, name := range required {
		if fs.Lookup(name).Value.String() == "" {
			return fs.usageError(stderr, "--%s is required", name)
		}
	}
	return -1
}

func (fs *configFlags) usageError(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n\n", fs.name, fmt.Sprintf(format, args...))
	fs.Usage()
	return 2
}

// loadOptions are the options of Load for a file as policyctl reads it: the file and its
// overlay alone, unless withEnv asks for the environment and ./.env too, as policyd reads them.
func loadOptions(file, profile string, withEnv bool) config.LoadOptions {
	opts := config.LoadOptions{File: file, Profile: profile}
	if !withEnv {
		opts.Env, opts.DotEnv = []string{}, config.NoDotEnv
	}
	return opts
}

func describeFile(file, profile string) string {
	if profile == "" {
		return file
	}
	return file + " (profile " + profile + ")"
}

const validateAbout = `check a config file (and profile overlay); print ok or every problem
Loads FILE as policyd would — with the overlay FILE's base.<profile>.<ext> beside it when
--profile is given — and checks every key: unknown keys, types, ranges, enums, files and
folders that must exist, rules across keys. Prints "ok", or every problem one a line as
"key.path: message (source)" on stderr and exits 1. The environment and ./.env are left
out unless --env is given.
`

func configValidate(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "FILE [--profile P] [--env]", validateAbout)
	profile := fs.String("profile", "", "profile `P`: overlay FILE's <base>.P.<ext> (default: none, not even $POLICYD_PROFILE unless --env)")
	withEnv := fs.Bool("env", false, "also apply the POLICYD_* environment and ./.env, as policyd does")
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return fs.usageError(stderr, "want one config FILE, got %d arguments", len(pos))
	}
	_, _, err := config.Load(loadOptions(pos[0], *profile, *withEnv))
	if err != nil {
		var ve *config.ValidationError
		if errors.As(err, &ve) {
			fmt.Fprintf(stderr, "%s: %d problem%s:\n", describeFile(pos[0], *profile), len(ve.Problems), plural(len(ve.Problems)))
		}
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

const schemaAbout = `print the JSON Schema of a config file
Prints the JSON Schema (draft 2020-12) of a policyd config file or profile overlay, generated
from the config struct: types, enums, bounds, defaults, descriptions; unknown keys are
rejected. Point an editor's YAML or JSON language server at it, or check files in CI.
`

func configSchema(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "", schemaAbout)
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		return fs.usageError(stderr, "unexpected arguments %q", pos)
	}
	if _, err := stdout.Write(config.Schema()); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	return 0
}

const diffAbout = `show what changes from config A to config B, and which changes need a restart
Loads and validates A and B (each with its profile overlay, if any) and lists every key whose
value differs: models are matched by name. A change marked "restart needed" is not applied by
a reload (SIGHUP or a file change) of a running policyd; the others are. Exits 0 whether or
not anything differs, 1 when A or B is invalid.
`

func configDiff(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "A B [--profile P | --profile-a P --profile-b Q] [--env]", diffAbout)
	profile := fs.String("profile", "", "profile `P` of both A and B")
	profileA := fs.String("profile-a", "", "profile `P` of A (default: --profile)")
	profileB := fs.String("profile-b", "", "profile `P` of B (default: --profile)")
	withEnv := fs.Bool("env", false, "also apply the POLICYD_* environment and ./.env to both, as policyd does")
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) != 2 {
		return fs.usageError(stderr, "want two config files A and B, got %d arguments", len(pos))
	}
	pa, pb := *profileA, *profileB
	if pa == "" {
		pa = *profile
	}
	if pb == "" {
		pb = *profile
	}
	var cfgs [2]*config.Config
	bad := false
	for i, f := range []struct{ file, profile string }{{pos[0], pa}, {pos[1], pb}} {
		c, _, err := config.Load(loadOptions(f.file, f.profile, *withEnv))
		if err != nil {
			fmt.Fprintf(stderr, "%s is invalid:\n%v\n", describeFile(f.file, f.profile), err)
			bad = true
		}
		cfgs[i] = c
	}
	if bad {
		return 1
	}
	changes := config.Diff(cfgs[0], cfgs[1])
	if len(changes) == 0 {
		fmt.Fprintln(stdout, "no changes")
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tA\tB\t")
	restarts := 0
	for _, c := range changes {
		mark := ""
		if c.Restart {
			mark = "restart needed"
			restarts++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Key, orDash(c.Old), orDash(c.New), mark)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\n%d change%s, %d need%s a restart\n", len(changes), plural(len(changes)), restarts, map[bool]string{true: "s", false: ""}[restarts == 1])
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
