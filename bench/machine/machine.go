// Package machine describes the machine a benchmark runs on: CPU model and ISA flags, the ISA
// oneDNN dispatches to, kernel, load, the checkout's commit. Pure Go over /proc and a few
// commands; every benchmark report of bench/ prints it so numbers can be traced to hardware.
package machine

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// simdFlags are the /proc/cpuinfo flags the kernels (oneDNN's JIT, Go's, ORT's MLAS) care about.
var simdFlags = map[string]bool{
	"sse4_2": true, "avx": true, "avx2": true, "fma": true, "f16c": true,
	"avx512f": true, "avx512bw": true, "avx512vl": true, "avx512dq": true, "avx512cd": true,
	"avx512_vnni": true, "avx512_bf16": true, "avx512_fp16": true, "avx_vnni": true,
	"amx_tile": true, "amx_bf16": true, "amx_int8": true,
}

// CPUInfo reads /proc/cpuinfo: the first "model name" and the SIMD flags of simdFlags the CPU
// has, in cpuinfo's order, space-separated.
func CPUInfo() (model, simd string) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return runtime.GOARCH, ""
	}
	defer f.Close()
	return parseCPUInfo(f)
}

func parseCPUInfo(r interface{ Read([]byte) (int, error) }) (model, simd string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case k == "model name" && model == "":
			model = v
		case k == "flags" && simd == "":
			var keep []string
			for _, fl := range strings.Fields(v) {
				if simdFlags[fl] {
					keep = append(keep, fl)
				}
			}
			simd = strings.Join(keep, " ")
		}
		if model != "" && simd != "" {
			break
		}
	}
	return model, simd
}

// Loadavg is the first three fields of /proc/loadavg, "" where unreadable.
func Loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Kernel is the running kernel's release (uname -r), from /proc.
func Kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// GitCommit is `git describe --always --dirty` of the working directory, "" outside a checkout.
// A dirty tree is worth knowing: lib/ may hold a build of uncommitted native changes.
func GitCommit(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty", "--abbrev=10").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// ShellQuote joins args as a copy-pastable POSIX shell command.
func ShellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=,:@+%", r))
		}) < 0 {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// oneDNN prints its dispatch ISA once, at the first primitive creation, when ONEDNN_VERBOSE
// (DNNL_VERBOSE before 3.0) is set: "onednn_verbose,info,cpu,isa:Intel AVX-512 with ..." or,
// for 2.x, "dnnl_verbose,info,cpu,isa:...".
var isaLine = regexp.MustCompile(`(?m)^(?:onednn|dnnl)_verbose,info,cpu,isa:(.+?)\s*$`)

// OneDNNISA finds the ISA line in the output of a process run with ONEDNN_VERBOSE=1.
func OneDNNISA(out string) string {
	if m := isaLine.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

// runtimeLine matches "onednn_verbose,info,cpu,runtime:OpenMP,nthr:1".
var runtimeLine = regexp.MustCompile(`(?m)^(?:onednn|dnnl)_verbose,info,cpu,runtime:([^,\s]+)`)

// OneDNNRuntime finds oneDNN's CPU threading runtime (OpenMP, TBB, SEQ, THREADPOOL) in the
// same output.
func OneDNNRuntime(out string) string {
	if m := runtimeLine.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

// oneDNNVersion matches "onednn_verbose,info,oneDNN v2.6.3 (commit ...)".
var versionLine = regexp.MustCompile(`(?m)^(?:onednn|dnnl)_verbose,info,(?:oneDNN|DNNL) (v[0-9.]+)`)

// OneDNNVersion finds oneDNN's version in the same output.
func OneDNNVersion(out string) string {
	if m := versionLine.FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

// Slug lowercases s and turns every run of other characters than letters and digits into one
// '-': "AMD EPYC 7B13" -> "amd-epyc-7b13". Baselines are keyed by slugs.
func Slug(s string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
		} else if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}

// BusyCPU is the CPU time all CPUs of the machine have spent busy (user, nice, system, irq,
// softirq) since boot, in seconds, from /proc/stat's first line. Between two readings, busy
// minus what the processes of a benchmark used is what others used: the interference a
// benchmark on a shared machine must own up to.
func BusyCPU() (float64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return parseBusy(line)
}

func parseBusy(line string) (float64, bool) {
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, false
	}
	busy := 0.0
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0, false
		}
		busy += v / 100 // USER_HZ
	}
	return busy, true
}
