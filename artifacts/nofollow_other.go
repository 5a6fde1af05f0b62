//go:build !unix

package artifacts

const oNoFollow = 0
