//go:build !linux

package load

import "time"

func preciseThread() {}

func sleepUntil(t time.Time, _ time.Duration) { time.Sleep(time.Until(t)) }
