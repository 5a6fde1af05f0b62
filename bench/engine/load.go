package engine

import (
	"syscall"
	"time"

	"github.com/policyd/policyd/bench/machine"
)

// cpuSample is the machine's busy CPU time and this process's own (children included) at one
// instant. Between two samples, busy − own is what other processes used: the interference a
// benchmark on a shared machine must own up to.
type cpuSample struct {
	at   time.Time
	busy float64 // seconds, all CPUs, from /proc/stat
	own  float64 // seconds, this process + its waited-for children (the node peers)
	ok   bool
}

func sampleCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	busy, ok := machine.BusyCPU()
	if !ok {
		return s
	}
	s.busy = busy
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) != nil {
			return s
		}
		s.own += tv(ru.Utime) + tv(ru.Stime)
	}
	s.ok = true
	return s
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

// otherCores is the average number of cores other processes kept busy between a and b; -1
// when unknown.
func otherCores(a, b cpuSample) float64 {
	wall := b.at.Sub(a.at).Seconds()
	if !a.ok || !b.ok || wall <= 0 {
		return -1
	}
	return max(0, ((b.busy-a.busy)-(b.own-a.own))/wall)
}

// ownCores is the average number of cores this process and its children used between a and b;
// -1 when unknown.
func ownCores(a, b cpuSample) float64 {
	wall := b.at.Sub(a.at).Seconds()
	if !a.ok || !b.ok || wall <= 0 {
		return -1
	}
	return (b.own - a.own) / wall
}

// account sets r's CPU fields from the samples around it.
func account(r *Result, a, b cpuSample) {
	r.OwnCores = round(ownCores(a, b), 2)
	r.OtherCores = round(otherCores(a, b), 2)
}
