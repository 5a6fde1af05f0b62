//go:build !linux

package load

import "time"

func preciseThread() (release func()) { return func() {} }

func sleepUntil(t time.Time, _ time.Duration) { time.Sleep(time.Until(t)) }
