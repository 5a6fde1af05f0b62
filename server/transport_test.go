package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// What the transport does before a handler runs: the live body limit applied when the headers
// arrive, and the HTTP versions the server speaks. These tests speak raw HTTP over TCP, so they
// see what a client sees: the status, the bytes the server did not wait for, the connection.

// tcpServer serves reg on 127.0.0.1 and returns the server and its address.
func tcpServer(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	srv := New(testRegistry(), zaptest.NewLogger(t), opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

// rawResponse is a response read off a connection.
type rawResponse struct {
	proto  string
	status int
	header map[string]string // keys lower-case
	body   string
}

// rawExchange writes what to a new connection and reads one response within 5 seconds (and the
// interim 1xx ones before it); it also reports whether the server then closed the connection.
func rawExchange(t *testing.T, addr, what string) (resp rawResponse, interim []int, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, what); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for {
		resp = readRawResponse(t, br)
		if resp.status >= 200 {
			break
		}
		interim = append(interim, resp.status)
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err = br.ReadByte()
	var ne net.Error
	closed = err != nil && !(errors.As(err, &ne) && ne.Timeout())
	return resp, interim, closed
}

func readRawResponse(t *testing.T, br *bufio.Reader) rawResponse {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("no response (the server waited for the body?): %v", err)
	}
	f := strings.SplitN(strings.TrimSpace(line), " ", 3)
	if len(f) < 2 {
		t.Fatalf("status line %q", line)
	}
	r := rawResponse{proto: f[0], header: map[string]string{}}
	r.status, _ = strconv.Atoi(f[1])
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("headers: %v", err)
		}
		l = strings.TrimSpace(l)
		if l == "" {
			break
		}
		k, v, _ := strings.Cut(l, ":")
		r.header[strings.ToLower(k)] = strings.TrimSpace(v)
	}
	if n, err := strconv.Atoi(r.header["content-length"]); err == nil && n > 0 {
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			t.Fatalf("body: %v", err)
		}
		r.body = string(b)
	}
	return r
}

func rawError(t *testing.T, r rawResponse) string {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Error == nil {
		t.Fatalf("%d body %q is not {\"error\": ...}: %v", r.status, r.body, err)
	}
	return *e.Error
}

const inferPath = "/v2/models/policy/versions/1/infer"

// An announced body over the live limit is answered 413, naming the limit, as soon as the
// headers arrive: the client never sends a byte of it, and the connection is closed. The
// limit is the live one: lowered and raised by SetMaxRequestBodySize.
func TestBodyLimitWhenHeadersArrive(t *testing.T) {
	srv, addr := tcpServer(t, Options{MaxRequestBodySize: 4096})
	announce := func(n int) string {
		return "POST " + inferPath + " HTTP/1.1\r\nHost: policyd\r\nContent-Type: application/json\r\nContent-Length: " +
			strconv.Itoa(n) + "\r\n\r\n"
	}
	for _, c := range []struct {
		name  string
		limit int // 0: as started
		size  int
		want  string
	}{
		{"100 MiB against 4 KiB", 0, 100 << 20, "4096 bytes (4 KiB)"},
		{"one byte over", 0, 4097, "4096 bytes (4 KiB)"},
		{"lowered live to 1 KiB", 1024, 2048, "1024 bytes (1 KiB)"},
		{"raised live to 1 MiB", 1 << 20, 2 << 20, "1048576 bytes (1 MiB)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv.SetMaxRequestBodySize(c.limit)
			r, interim, closed := rawExchange(t, addr, announce(c.size))
			if r.status != 413 || !strings.Contains(rawError(t, r), c.want) {
				t.Errorf("status %d %q, want 413 naming %s", r.status, r.body, c.want)
			}
			if len(interim) > 0 || !closed || !strings.EqualFold(r.header["connection"], "close") {
				t.Errorf("interim %v, closed %v, Connection %q: want the connection closed", interim, closed, r.header["connection"])
			}
		})
	}
	// Under the raised limit a body over the limit the server started with is read and served.
	srv.SetMaxRequestBodySize(1 << 20)
	body := `{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"pad":"` + strings.Repeat("x", 8192) + `"}`
	r, _, _ := rawExchange(t, addr, announce(len(body))+body)
	if r.status == 413 {
		t.Errorf("a %d-byte body under the raised limit: 413 %s", len(body), r.body)
	}
	// n <= 0 restores the limit of Options.
	srv.SetMaxRequestBodySize(0)
	if r, _, _ := rawExchange(t, addr, announce(4097)); r.status != 413 || !strings.Contains(r.body, "4096 bytes") {
		t.Errorf("after SetMaxRequestBodySize(0): %d %s", r.status, r.body)
	}
}

// A chunked body is cut once it passes the limit: 413 and the connection closed while the
// client is still sending, without waiting for the last chunk.
func TestChunkedBodyCutAtLimit(t *testing.T) {
	_, addr := tcpServer(t, Options{MaxRequestBodySize: 1024})
	chunk := strconv.FormatInt(512, 16) + "\r\n" + strings.Repeat("x", 512) + "\r\n"
	head := "POST " + inferPath + " HTTP/1.1\r\nHost: policyd\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
	r, _, closed := rawExchange(t, addr, head+chunk+chunk+chunk) // 1536 bytes, no last chunk
	if r.status != 413 || !strings.Contains(rawError(t, r), "1024 bytes (1 KiB)") {
		t.Errorf("status %d %q, want 413 naming the limit", r.status, r.body)
	}
	if !closed {
		t.Error("the connection stayed open after a chunked body over the limit")
	}
	// Under the limit, a chunked body is read whole and reaches the handler.
	body := `{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`
	r, _, _ = rawExchange(t, addr, head+strconv.FormatInt(int64(len(body)), 16)+"\r\n"+body+"\r\n0\r\n\r\n")
	if r.status != 200 {
		t.Errorf("chunked body under the limit: %d %s", r.status, r.body)
	}
}

// "Expect: 100-continue" with a length over the limit gets the 413 instead of an invitation
// to send the body (curl sends it for bodies over 1 MiB); under the limit, 100 then the answer.
func TestExpectContinueOverLimit(t *testing.T) {
	_, addr := tcpServer(t, Options{MaxRequestBodySize: 1024})
	head := func(n int) string {
		return "POST " + inferPath + " HTTP/1.1\r\nHost: policyd\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " +
			strconv.Itoa(n) + "\r\n\r\n"
	}
	r, interim, closed := rawExchange(t, addr, head(50<<20))
	if len(interim) > 0 || r.status != 413 || !strings.Contains(rawError(t, r), "1024 bytes") || !closed {
		t.Errorf("interim %v, status %d %q, closed %v: want 413 naming the limit, no 100, the connection closed", interim, r.status, r.body, closed)
	}
	body := `{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, head(len(body)))
	br := bufio.NewReader(c)
	if got := readRawResponse(t, br); got.status != 100 {
		t.Fatalf("under the limit: interim %d, want 100", got.status)
	}
	io.WriteString(c, body)
	if got := readRawResponse(t, br); got.status != 200 {
		t.Errorf("body under the limit after 100: %d %s", got.status, got.body)
	}
}

// HTTP/1.0 and HTTP/1.1 are served; any other version (fasthttp parses HTTP/d.d) gets 505,
// with or without a route, and the connection is closed.
func TestHTTPVersions(t *testing.T) {
	_, addr := tcpServer(t, Options{})
	for _, c := range []struct {
		req    string
		status int
	}{
		{"GET /v2/health/live HTTP/1.1\r\nHost: policyd\r\n\r\n", 200},
		{"GET /v2/health/live HTTP/1.0\r\n\r\n", 200},
		{"GET /v2 HTTP/1.0\r\n\r\n", 200},
		{"GET /v2/health/live HTTP/9.9\r\nHost: policyd\r\n\r\n", 505},
		{"GET / HTTP/9.9\r\nHost: policyd\r\n\r\n", 505},
		{"GET /v2/health/live HTTP/2.0\r\nHost: policyd\r\n\r\n", 505},
		{"GET /v2/health/live HTTP/0.9\r\nHost: policyd\r\n\r\n", 505},
		{"POST " + inferPath + " HTTP/3.0\r\nHost: policyd\r\nContent-Length: 2\r\n\r\n{}", 505},
	} {
		line, _, _ := strings.Cut(c.req, "\r\n")
		t.Run(line, func(t *testing.T) {
			r, _, closed := rawExchange(t, addr, c.req)
			if r.status != c.status {
				t.Fatalf("status %d %s, want %d", r.status, r.body, c.status)
			}
			if c.status == 505 {
				proto := strings.Fields(line)[2]
				if msg := rawError(t, r); !strings.Contains(msg, "HTTP version "+proto+" not supported") {
					t.Errorf("505 message %q does not name %s", msg, proto)
				}
				if !closed {
					t.Error("the connection stayed open after 505")
				}
			}
		})
	}
	// A malformed version is still a 400 from the transport.
	if r, _, _ := rawExchange(t, addr, "GET /v2/health/live HTTP/1\r\n\r\n"); r.status != 400 {
		t.Errorf("HTTP/1: %d %s, want 400", r.status, r.body)
	}
}
