package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// adminCall is one call of a running server's admin API: method on server + path (a path
// under /v2/admin, its model already escaped) with body as JSON and the bearer token read from
// tokenFile ("": none). It returns the answer of a 2xx, or ok false once it has written why to
// stderr prefixed with name. usage is false when the fault is the --server flag's (the caller
// then answers with its usage error).
func adminCall(ctx context.Context, name, method, server, path, tokenFile string, timeout time.Duration, limit int64, body []byte, stderr io.Writer) (answer []byte, ok, usage bool) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, false, true
	}
	token := ""
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return nil, false, false
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			fmt.Fprintf(stderr, "%s: %s is empty\n", name, tokenFile)
			return nil, false, false
		}
	}
	endpoint := strings.TrimRight(server, "/") + path
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, endpoint, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, false, false
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return nil, false, false
	}
	defer resp.Body.Close()
	answer, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		fmt.Fprintf(stderr, "%s: reading the answer: %v\n", name, err)
		return nil, false, false
	}
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(stderr, "%s: %s %s: %s\n%s\n", name, method, endpoint, resp.Status, bytes.TrimSpace(answer))
		return nil, false, false
	}
	return answer, true, false
}
