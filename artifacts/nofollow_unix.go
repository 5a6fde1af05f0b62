//go:build unix

package artifacts

import "syscall"

const oNoFollow = syscall.O_NOFOLLOW
