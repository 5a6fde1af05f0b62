package machine

import (
	"strings"
	"testing"
)

func TestParseCPUInfo(t *testing.T) {
	in := "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni sha_ni\n\nprocessor\t: 1\nmodel name\t: other\n"
	model, simd := parseCPUInfo(strings.NewReader(in))
	if model != "AMD EPYC 7B13" || simd != "sse4_2 avx avx2 fma avx512f avx512_vnni" {
		t.Errorf("parseCPUInfo = %q, %q", model, simd)
	}
}

// Lines as Debian's libdnnl 2.6 prints them under ONEDNN_VERBOSE=1, and as oneDNN 1.x/2.x
// with DNNL_VERBOSE prints them.
func TestOneDNNVerbose(t *testing.T) {
	out := `{"level":"info","msg":"serving"}
onednn_verbose,info,oneDNN v2.6.3 (commit N/A)
onednn_verbose,info,cpu,runtime:OpenMP,nthr:1
onednn_verbose,info,cpu,isa:Intel AVX-512 with Intel DL Boost and bfloat16 support
onednn_verbose,info,gpu,runtime:OpenCL
onednn_verbose,exec,cpu,inner_product,brgemm:avx512_core,forward_inference,...
`
	if got := OneDNNISA(out); got != "Intel AVX-512 with Intel DL Boost and bfloat16 support" {
		t.Errorf("ISA %q", got)
	}
	if got := OneDNNVersion(out); got != "v2.6.3" {
		t.Errorf("version %q", got)
	}
	if got := OneDNNRuntime(out); got != "OpenMP" {
		t.Errorf("runtime %q", got)
	}
	old := "dnnl_verbose,info,DNNL v1.1.0 (commit x)\ndnnl_verbose,info,cpu,isa:Intel AVX2\n"
	if OneDNNISA(old) != "Intel AVX2" || OneDNNVersion(old) != "v1.1.0" {
		t.Errorf("DNNL_VERBOSE lines: %q %q", OneDNNISA(old), OneDNNVersion(old))
	}
	if OneDNNISA("nothing here") != "" || OneDNNRuntime("") != "" {
		t.Error("no verbose output must give empty strings")
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"AMD EPYC 7B13": "amd-epyc-7b13",
		"Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz": "intel-r-xeon-r-platinum-8375c-cpu-2-90ghz",
		"  --x--  ": "x",
		"":          "",
	} {
		if got := Slug(in); got != want {
			t.Errorf("Slug(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseBusy(t *testing.T) {
	// user nice system idle iowait irq softirq steal: busy = user+nice+system+irq+softirq.
	busy, ok := parseBusy("cpu  100 20 30 1000 50 5 5 0 0 0")
	if !ok || busy != 1.6 {
		t.Errorf("parseBusy = %v %v, want 1.6 s", busy, ok)
	}
	if _, ok := parseBusy("intr 1 2 3"); ok {
		t.Error("a line other than cpu accepted")
	}
}

func TestShellQuote(t *testing.T) {
	if got := ShellQuote([]string{"bin/policyctl", "--model", "mlp-small,lstm", "--x", "a b", "it's", ""}); got != `bin/policyctl --model mlp-small,lstm --x 'a b' 'it'\''s' ''` {
		t.Errorf("ShellQuote = %s", got)
	}
}
