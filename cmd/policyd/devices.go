package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/policyd/policyd/config"
)

// cpuDevice is the CPU as health details describe it.
type cpuDevice struct {
	Model string `json:"model"`
	Cores int    `json:"cores"` // logical CPUs this process may use
	Arch  string `json:"arch"`
}

var cpuModel = sync.OnceValue(func() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && (strings.TrimSpace(k) == "model name" || strings.TrimSpace(k) == "Model") {
			return strings.TrimSpace(v)
		}
	}
	return ""
})

func cpuInfo() cpuDevice {
	return cpuDevice{Model: cpuModel(), Cores: runtime.NumCPU(), Arch: runtime.GOARCH}
}

// configDigest is "sha256:<hex>" of the JSON encoding of the configuration in force: it
// changes when a reload applies anything, so it names the configuration's version.
func configDigest(c *config.Config) string {
	b, err := json.Marshal(c)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
