package load

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ProcCPU is the user+system CPU seconds a process (all its threads) has used, from
// /proc/PID/stat.
func ProcCPU(pid int) (float64, bool) {
	if pid <= 0 {
		return 0, false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	return parseStatCPU(string(raw))
}

func parseStatCPU(s string) (float64, bool) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:]) // f[0] = state (field 3); utime = field 14, stime = 15
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return (ut + st) / 100.0, true // USER_HZ is 100 on Linux
}

// procsCPU sums ProcCPU over pids; ok only when every one was readable.
func procsCPU(pids []int) (float64, bool) {
	total, ok := 0.0, len(pids) > 0
	for _, pid := range pids {
		c, good := ProcCPU(pid)
		total += c
		ok = ok && good
	}
	return total, ok
}

// childrenCPU is the CPU seconds of this process's terminated and waited-for children (ghz).
func childrenCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// Memory is a process's resident set now (VmRSS) and its peak (VmHWM), bytes, from
// /proc/PID/status.
type Memory struct {
	RSS     int64 `json:"rss_bytes"`
	PeakRSS int64 `json:"peak_rss_bytes"`
}

// ProcMemory reads /proc/PID/status.
func ProcMemory(pid int) (Memory, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	return parseStatus(string(raw))
}

func parseStatus(s string) (Memory, error) {
	var m Memory
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("status: %s: unexpected %q", k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("status: %s: %w", k, err)
		}
		if k == "VmRSS" {
			m.RSS = n << 10
		} else {
			m.PeakRSS = n << 10
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("status: no VmRSS")
	}
	return m, nil
}
