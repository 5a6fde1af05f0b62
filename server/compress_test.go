package server

import (
	"bytes"
	stdflate "compress/flate"
	stdgzip "compress/gzip"
	stdzlib "compress/zlib"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcgzip "google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/stats"

	"github.com/policyd/policyd/api/inference"
)

// The clients of these tests are Go's own: compress/gzip, compress/zlib and compress/flate
// write the bodies, net/http sends them over loopback TCP and (DisableCompression false)
// asks for and transparently decompresses gzip answers; grpc-go's gzip compressor is the gRPC
// client's.

func gzipOf(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := stdgzip.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zlibOf(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := stdzlib.NewWriter(&buf)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func flateOf(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w, _ := stdflate.NewWriter(&buf, stdflate.DefaultCompression)
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// httpServer serves reg over loopback TCP for net/http clients; it returns the base URL.
func httpServer(t *testing.T, reg Registry, opts Options) (*Server, string) {
	t.Helper()
	srv := New(reg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), opts)
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
		if fr, ok := reg.(*fakeRegistry); ok && fr.held() != 0 {
			t.Errorf("%d model versions acquired and not released", fr.held())
		}
	})
	return srv, "http://" + ln.Addr().String()
}

// postHTTP sends body with the headers (name, value pairs) through client.
func postHTTP(t *testing.T, client *http.Client, url string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// obsJSON is a JSON request of policy with rows rows of obs (row r: r, -r, r/2, 1).
func obsJSON(rows int) ([]byte, []float32) {
	obs := make([]float32, 0, 4*rows)
	for r := range rows {
		obs = append(obs, float32(r), -float32(r), float32(r)/2, 1)
	}
	data, _ := json.Marshal(obs)
	return []byte(fmt.Sprintf(`{"inputs":[{"name":"obs","shape":[%d,4],"datatype":"FP32","data":%s}],"outputs":[{"name":"action"}]}`, rows, data)), obs
}

// wantAction checks a JSON response's "action" output is 2*obs, as policyModel computes.
func wantAction(t *testing.T, body []byte, obs []float32) {
	t.Helper()
	var r struct {
		Outputs []struct {
			Name string    `json:"name"`
			Data []float32 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("response %q: %v", clip(string(body), 200), err)
	}
	if len(r.Outputs) != 1 || r.Outputs[0].Name != "action" || len(r.Outputs[0].Data) != len(obs) {
		t.Fatalf("response %q: want one output action of %d values", clip(string(body), 200), len(obs))
	}
	for i, v := range r.Outputs[0].Data {
		if v != 2*obs[i] {
			t.Fatalf("action[%d] = %v, want %v", i, v, 2*obs[i])
		}
	}
}

func TestCompressedRequests(t *testing.T) {
	_, base := httpServer(t, binaryRegistry(), Options{})
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}} // plain answers: read them as sent
	url := base + "/v2/models/policy/infer"
	body, obs := obsJSON(3)
	for _, c := range []struct {
		name, encoding string
		body           []byte
	}{
		{"gzip", "gzip", gzipOf(t, body)},
		{"x-gzip", "x-gzip", gzipOf(t, body)},
		{"GZIP", "GZIP", gzipOf(t, body)},
		{"gzip-two-members", "gzip", append(gzipOf(t, body[:20]), gzipOf(t, body[20:])...)},
		{"deflate-zlib", "deflate", zlibOf(t, body)},
		{"deflate-raw", "deflate", flateOf(t, body)},
		{"identity", "identity", body},
		{"gzip-identity", "gzip, identity", gzipOf(t, body)},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, b := postHTTP(t, client, url, c.body, "Content-Type", "application/json", "Content-Encoding", c.encoding)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			wantAction(t, b, obs)
		})
	}

	// Binary tensors: Inference-Header-Content-Length is the JSON's length in the body as it is
	// decompressed (Triton's clients compress the framed body after setting it).
	js := `{"inputs":[{"name":"obs","shape":[2,4],"datatype":"FP32","parameters":{"binary_data_size":32}}],"outputs":[{"name":"action","parameters":{"binary_data":true}}]}`
	in := []float32{1, -2, 3.5, 0, -1, 0.25, 8, 9}
	framed, hdr := binaryBody(js, le32(in...))
	for _, enc := range []string{"gzip", "deflate"} {
		t.Run("binary-"+enc, func(t *testing.T) {
			cb := gzipOf(t, framed)
			if enc == "deflate" {
				cb = zlibOf(t, framed)
			}
			resp, b := postHTTP(t, client, url, cb, "Content-Type", "application/octet-stream", "Content-Encoding", enc, inferHeaderLength, hdr)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			n, err := strconv.Atoi(resp.Header.Get(inferHeaderLength))
			if err != nil || n > len(b) || len(b)-n != 32 {
				t.Fatalf("response framing: %s=%q, body %d bytes", inferHeaderLength, resp.Header.Get(inferHeaderLength), len(b))
			}
			for i, v := range bytesF32(b[n:]) {
				if v != 2*in[i] {
					t.Fatalf("action[%d] = %v, want %v", i, v, 2*in[i])
				}
			}
		})
	}
	// A binary answer compressed: Inference-Header-Content-Length counts the JSON of the
	// answer as decompressed (Triton's clients decompress, then split).
	t.Run("binary-answer-gzip", func(t *testing.T) {
		rows := 64
		obs := make([]float32, 4*rows)
		for i := range obs {
			obs[i] = float32(i) / 8
		}
		js := fmt.Sprintf(`{"inputs":[{"name":"obs","shape":[%d,4],"datatype":"FP32","parameters":{"binary_data_size":%d}}],"outputs":[{"name":"action","parameters":{"binary_data":true}}]}`, rows, 16*rows)
		framed, hdr := binaryBody(js, le32(obs...))
		resp, b := postHTTP(t, http.DefaultClient, url, gzipOf(t, framed), "Content-Encoding", "gzip", inferHeaderLength, hdr)
		if resp.StatusCode != 200 || !resp.Uncompressed {
			t.Fatalf("status %d, gzip answer %v: %s", resp.StatusCode, resp.Uncompressed, clip(string(b), 200))
		}
		n, err := strconv.Atoi(resp.Header.Get(inferHeaderLength))
		if err != nil || n > len(b) || len(b)-n != 16*rows {
			t.Fatalf("response framing: %s=%q, body %d bytes", inferHeaderLength, resp.Header.Get(inferHeaderLength), len(b))
		}
		for i, v := range bytesF32(b[n:]) {
			if v != 2*obs[i] {
				t.Fatalf("action[%d] = %v, want %v", i, v, 2*obs[i])
			}
		}
	})
	// TensorFlow Serving's predict reads the decompressed body too.
	t.Run("predict-gzip", func(t *testing.T) {
		resp, b := postHTTP(t, client, base+"/v1/models/policy:predict", gzipOf(t, []byte(`{"instances":[[1,-2,0.5,0]]}`)), "Content-Encoding", "gzip")
		if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"action":[2,-4,1,0]`)) {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
	})
	// The compressed length as the header: the JSON part would be cut short.
	t.Run("binary-header-of-compressed-body", func(t *testing.T) {
		cb := gzipOf(t, framed)
		resp, b := postHTTP(t, client, url, cb, "Content-Encoding", "gzip", inferHeaderLength, strconv.Itoa(len(cb)))
		if resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400: %s", resp.StatusCode, b)
		}
	})
}

func TestCompressedRequestErrors(t *testing.T) {
	const limit = 4096
	_, base := httpServer(t, binaryRegistry(), Options{MaxRequestBodySize: limit})
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	url := base + "/v2/models/policy/infer"
	body, _ := obsJSON(3)
	gz := gzipOf(t, body)
	big := append(append([]byte(nil), body[:len(body)-1]...), bytes.Repeat([]byte(" "), limit)...) // valid JSON once trimmed; over the limit
	big = append(big, '}')
	lying := gzipOf(t, big)
	binary.LittleEndian.PutUint32(lying[len(lying)-4:], 100) // a trailer that understates the size
	badSum := append([]byte(nil), gz...)
	badSum[len(badSum)-8] ^= 0xff // CRC-32
	for _, c := range []struct {
		name, encoding string
		body           []byte
		status         int
		msg            []string
	}{
		{"brotli", "br", gz, 415, []string{`Content-Encoding "br" not supported`, "gzip, deflate, identity"}},
		{"zstd", "zstd", gz, 415, []string{`"zstd"`}},
		{"stacked", "gzip, deflate", gz, 415, []string{"one coding at most"}},
		{"not-gzip", "gzip", body, 400, []string{"not a valid gzip stream (Content-Encoding: gzip)", "invalid header"}},
		{"truncated", "gzip", gz[:len(gz)/2], 400, []string{"gzip", "unexpected EOF"}},
		{"checksum", "gzip", badSum, 400, []string{"gzip", "checksum"}},
		{"trailing-garbage", "gzip", append(append([]byte(nil), gz...), "xyz"...), 400, []string{"gzip"}},
		{"empty", "gzip", []byte{}, 400, []string{"gzip", "unexpected EOF"}},
		{"deflate-garbage", "deflate", []byte("\xff\xff\xff\xff not deflate"), 400, []string{"not a valid deflate stream (Content-Encoding: deflate)"}},
		{"over-limit", "gzip", gzipOf(t, big), 413, []string{"decompressed (Content-Encoding: gzip) it is over the limit of 4096 bytes (4 KiB)"}},
		{"over-limit-lying-trailer", "gzip", lying, 413, []string{"over the limit of 4096 bytes"}},
		{"over-limit-deflate", "deflate", zlibOf(t, big), 413, []string{"decompressed (Content-Encoding: deflate)"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, b := postHTTP(t, client, url, c.body, "Content-Type", "application/json", "Content-Encoding", c.encoding)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
			var e struct{ Error string }
			if err := json.Unmarshal(b, &e); err != nil {
				t.Fatalf("body %q: %v", b, err)
			}
			for _, m := range c.msg {
				if !strings.Contains(e.Error, m) {
					t.Errorf("error %q does not contain %q", e.Error, m)
				}
			}
		})
	}
	// Every route reads the decompressed body, and the connection serves on after an error.
	resp, b := postHTTP(t, client, url, gz, "Content-Encoding", "gzip")
	if resp.StatusCode != 200 {
		t.Errorf("after the errors: status %d: %s", resp.StatusCode, b)
	}
}

// TestZipBomb: a 10 MB body that would expand to 10 GiB of zeros is refused 413 after inflating
// at most the body limit (64 MiB), in little time and memory; also when its trailer lies.
func TestZipBomb(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 10 MB bomb")
	}
	// One gzip member of 100 MiB of zeros (about 100 KB), a hundred times: 10 MB → 10 GiB.
	var member bytes.Buffer
	w, _ := stdgzip.NewWriterLevel(&member, stdgzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 100 {
		w.Write(zeros)
	}
	w.Close()
	bomb := bytes.Repeat(member.Bytes(), 100)
	lying := append([]byte(nil), bomb...)
	binary.LittleEndian.PutUint32(lying[len(lying)-4:], 1000) // says 1000 bytes: no early refusal
	t.Logf("bomb: %d bytes compressed, %d MiB decompressed", len(bomb), 100*100)

	_, base := httpServer(t, binaryRegistry(), Options{})
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	for _, c := range []struct {
		name string
		body []byte
	}{{"honest-trailer", bomb}, {"lying-trailer", lying}} {
		t.Run(c.name, func(t *testing.T) {
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			resp, b := postHTTP(t, client, base+"/v2/models/policy/infer", c.body, "Content-Encoding", "gzip")
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if resp.StatusCode != 413 || !bytes.Contains(b, []byte("over the limit of 67108864 bytes (64 MiB)")) {
				t.Fatalf("status %d: %s", resp.StatusCode, b)
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("413 in %v; %d MiB allocated (client and server), heap in use %d MiB", took, alloc>>20, after.HeapInuse>>20)
			if alloc > 320<<20 { // the 10 MB body read and sent, and at most 2× the limit (its buffer growing)
				t.Errorf("allocated %d MiB: decompression not bounded by the limit", alloc>>20)
			}
			if took > 20*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
}

func TestInflateBounded(t *testing.T) {
	// The output stops one byte past the limit whatever the stream says.
	zeros := gzipOf(t, make([]byte, 1<<20))
	binary.LittleEndian.PutUint32(zeros[len(zeros)-4:], 10)
	out, err := inflate(codingGzip, zeros, 1000, nil)
	var se *statusError
	if !errors.As(err, &se) || se.status != 413 {
		t.Fatalf("err %v, want 413", err)
	}
	if len(out) > 1001 || cap(out) > 4096 {
		t.Errorf("inflated %d bytes into a buffer of %d for a limit of 1000", len(out), cap(out))
	}
	// Exactly the limit is fine.
	want := bytes.Repeat([]byte("policyd "), 125)
	for _, c := range []coding{codingGzip, codingDeflate} {
		src := gzipOf(t, want)
		if c == codingDeflate {
			src = zlibOf(t, want)
		}
		got, err := inflate(c, src, 1000, nil)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s at the limit: %v, %d bytes", c, err, len(got))
		}
		if _, err := inflate(c, src, 999, nil); !errors.As(err, &se) || se.status != 413 {
			t.Errorf("%s one byte over: %v, want 413", c, err)
		}
	}
}

func TestContentCoding(t *testing.T) {
	for _, c := range []struct {
		in   string
		want coding
		err  string
	}{
		{"gzip", codingGzip, ""}, {"GZip", codingGzip, ""}, {"x-gzip", codingGzip, ""},
		{"deflate", codingDeflate, ""}, {" deflate ", codingDeflate, ""}, {"identity", codingIdentity, ""},
		{"identity, gzip", codingGzip, ""}, {"gzip,identity", codingGzip, ""},
		{"br", 0, `"br" not supported: use one of gzip, deflate, identity`},
		{"compress", 0, `"compress"`}, {"gzip, gzip", 0, "one coding at most"},
		{"gzip;q=1", 0, `"gzip;q=1"`},
	} {
		got, err := contentCoding([]byte(c.in))
		if c.err != "" {
			var se *statusError
			if !errors.As(err, &se) || se.status != 415 || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: %v, want 415 containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %v %v, want %v", c.in, got, err, c.want)
		}
	}
}

func TestAcceptedCoding(t *testing.T) {
	for _, c := range []struct {
		in   string
		want coding
	}{
		{"", codingIdentity}, {"gzip", codingGzip}, {"deflate", codingDeflate}, {"x-gzip", codingGzip},
		{"gzip, deflate, br", codingGzip}, {"deflate, gzip", codingGzip}, {"br", codingIdentity},
		{"gzip;q=0", codingIdentity}, {"gzip;q=0.0", codingIdentity}, {"gzip;q=0.000", codingIdentity},
		{"gzip;q=0, deflate", codingDeflate}, {"gzip;q=0.5, deflate", codingDeflate},
		{"gzip;q=0.5, deflate;q=0.4", codingGzip}, {"deflate;q=0.9, gzip;q=0.9", codingGzip},
		{"gzip;q=0.001", codingGzip}, {"GZIP ; Q=0.5", codingGzip}, {"gzip; level=1; q=0.2", codingGzip},
		{"*", codingGzip}, {"*;q=0", codingIdentity}, {"gzip;q=0, *", codingDeflate},
		{"*;q=0.1, gzip;q=0", codingDeflate}, {"identity", codingIdentity}, {"identity;q=0", codingIdentity},
		{"gzip;q=1.5", codingIdentity}, {"gzip;q=2", codingIdentity}, {"gzip;q=0.1234", codingIdentity},
		{"gzip;q=", codingIdentity}, {"gzip;q=abc", codingIdentity}, {"gzip;q=1.000", codingGzip},
		{"gzip;q=1.001", codingIdentity}, {"deflate;q=1.5, gzip;q=0.1", codingGzip},
	} {
		if got := acceptedCoding([]byte(c.in)); got != c.want {
			t.Errorf("%q: %v, want %v", c.in, got, c.want)
		}
	}
}

func TestCompressedResponses(t *testing.T) {
	_, base := httpServer(t, binaryRegistry(), Options{})
	url := base + "/v2/models/policy/infer"
	body, obs := obsJSON(256) // an answer well over 1 KiB

	// net/http's own client: it sends Accept-Encoding: gzip and decompresses transparently.
	resp, b := postHTTP(t, http.DefaultClient, url, body)
	if resp.StatusCode != 200 || !resp.Uncompressed {
		t.Fatalf("status %d, uncompressed by the client %v: want a gzip answer", resp.StatusCode, resp.Uncompressed)
	}
	wantAction(t, b, obs)

	raw := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	plainResp, plain := postHTTP(t, raw, url, body)
	if plainResp.Header.Get("Content-Encoding") != "" || plainResp.Header.Get("Vary") != "Accept-Encoding" {
		t.Errorf("without Accept-Encoding: Content-Encoding %q, Vary %q", plainResp.Header.Get("Content-Encoding"), plainResp.Header.Get("Vary"))
	}
	for _, c := range []struct{ accept, encoding string }{
		{"gzip", "gzip"}, {"deflate", "deflate"}, {"gzip;q=0", ""}, {"gzip;q=0, deflate;q=0.5", "deflate"},
		{"br", ""}, {"*", "gzip"}, {"identity", ""},
	} {
		resp, b := postHTTP(t, raw, url, body, "Accept-Encoding", c.accept)
		if got := resp.Header.Get("Content-Encoding"); got != c.encoding {
			t.Errorf("Accept-Encoding %q: Content-Encoding %q, want %q", c.accept, got, c.encoding)
			continue
		}
		if resp.Header.Get("Vary") != "Accept-Encoding" {
			t.Errorf("Accept-Encoding %q: Vary %q", c.accept, resp.Header.Get("Vary"))
		}
		var r io.Reader = bytes.NewReader(b)
		switch c.encoding {
		case "gzip":
			r, _ = stdgzip.NewReader(r)
		case "deflate":
			r, _ = stdzlib.NewReader(r) // RFC 9110's deflate: zlib
		}
		if r == nil {
			t.Fatalf("Accept-Encoding %q: answer not %s", c.accept, c.encoding)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("Accept-Encoding %q: decoded %d bytes (%v), want the %d of the plain answer", c.accept, len(got), err, len(plain))
		}
		if c.encoding != "" && len(b) >= len(plain) {
			t.Errorf("Accept-Encoding %q: %d bytes compressed, %d plain", c.accept, len(b), len(plain))
		}
		if resp.Header.Get("Content-Length") != strconv.Itoa(len(b)) {
			t.Errorf("Content-Length %q, body %d", resp.Header.Get("Content-Length"), len(b))
		}
	}

	// Tiny answers never: metadata, an error, a one-row inference.
	small, _ := obsJSON(1)
	for _, req := range []struct {
		method, path string
		body         []byte
	}{{"GET", "/v2", nil}, {"POST", "/v2/models/nope/infer", small}, {"POST", "/v2/models/policy/infer", small}} {
		r, _ := http.NewRequest(req.method, base+req.path, bytes.NewReader(req.body))
		r.Header.Set("Accept-Encoding", "gzip")
		resp, err := raw.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Vary") != "" || len(b) >= DefaultCompressMinBytes {
			t.Errorf("%s %s (%d bytes): Content-Encoding %q, Vary %q", req.method, req.path, len(b), resp.Header.Get("Content-Encoding"), resp.Header.Get("Vary"))
		}
	}
}

// TestCompressedConcurrent: concurrent compressed requests and answers, each its own data: the
// pooled buffers, readers and writers are never shared between requests.
func TestCompressedConcurrent(t *testing.T) {
	_, base := httpServer(t, binaryRegistry(), Options{CompressMinBytes: 128})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{}} // asks for gzip, decompresses
			for i := range 40 {
				rows := 1 + (g*40+i)%50
				obs := make([]float32, 4*rows)
				for j := range obs {
					obs[j] = float32(g*1000+i) + float32(j)/4
				}
				data, _ := json.Marshal(obs)
				body := []byte(fmt.Sprintf(`{"inputs":[{"name":"obs","shape":[%d,4],"datatype":"FP32","data":%s}],"outputs":[{"name":"action"}]}`, rows, data))
				enc, cb := "gzip", gzipOf(t, body)
				if i%2 == 1 {
					enc, cb = "deflate", zlibOf(t, body)
				}
				resp, b := postHTTP(t, client, base+"/v2/models/policy/infer", cb, "Content-Encoding", enc)
				if resp.StatusCode != 200 {
					t.Errorf("status %d: %s", resp.StatusCode, b)
					return
				}
				wantAction(t, b, obs)
			}
		}()
	}
	wg.Wait()
}

func TestCompressMinBytes(t *testing.T) {
	body, _ := obsJSON(256)
	for _, c := range []struct {
		min  int
		want string
	}{{-1, ""}, {1 << 20, ""}, {200, "gzip"}} {
		_, base := httpServer(t, binaryRegistry(), Options{CompressMinBytes: c.min})
		raw := &http.Client{Transport: &http.Transport{DisableCompression: true}}
		resp, _ := postHTTP(t, raw, base+"/v2/models/policy/infer", body, "Accept-Encoding", "gzip")
		if got := resp.Header.Get("Content-Encoding"); got != c.want {
			t.Errorf("CompressMinBytes %d: Content-Encoding %q, want %q", c.min, got, c.want)
		}
	}
}

// TestGrpcCompression: grpc-go's gzip both ways — the server answers a gzip call in gzip, as
// grpc-go does once the compressor is registered; the live body limit bounds the message as
// decompressed.
func TestGrpcCompression(t *testing.T) {
	ts := startGRPC(t, newFakeRegistry(policyModel("1")), Options{})
	// A client of our own that sees the payloads' sizes on the wire.
	var sizes payloadSizes
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(&sizes))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := inference.NewGRPCInferenceServiceClient(conn)
	obs := make([]float32, 4*256)
	for i := range obs {
		obs[i] = float32(i%17) - 8
	}
	wantOutputs := func(resp *inference.ModelInferResponse) {
		t.Helper()
		var got []float32
		if len(resp.RawOutputContents) > 0 {
			got = bytesF32(resp.RawOutputContents[0])
		} else if len(resp.Outputs) > 0 {
			got = resp.Outputs[0].GetContents().GetFp32Contents()
		}
		if len(got) != len(obs) {
			t.Fatalf("action has %d values, want %d", len(got), len(obs))
		}
		for i, v := range got {
			if v != 2*obs[i] {
				t.Fatalf("action[%d] = %v, want %v", i, v, 2*obs[i])
			}
		}
	}
	resp, err := client.ModelInfer(grpcCtx(t), obsRequest("", obs...), grpc.UseCompressor(grpcgzip.Name))
	if err != nil {
		t.Fatal(err)
	}
	wantOutputs(resp)
	if in := sizes.last(); in.CompressedLength == 0 || in.CompressedLength >= in.Length {
		t.Errorf("answer of a gzip call: %d bytes on the wire for %d: not compressed", in.CompressedLength, in.Length)
	}
	// An uncompressed call is answered uncompressed.
	resp, err = client.ModelInfer(grpcCtx(t), obsRequest("", obs...))
	if err != nil {
		t.Fatal(err)
	}
	wantOutputs(resp)
	if in := sizes.last(); in.CompressedLength != in.Length {
		t.Errorf("answer of a plain call: %d bytes on the wire for %d", in.CompressedLength, in.Length)
	}
	// A stream in gzip.
	st, err := client.ModelStreamInfer(grpcCtx(t), grpc.UseCompressor(grpcgzip.Name))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(obsRequest("", obs...)); err != nil {
		t.Fatal(err)
	}
	sr, err := st.Recv()
	if err != nil || sr.ErrorMessage != "" {
		t.Fatalf("stream: %v %q", err, sr.GetErrorMessage())
	}
	wantOutputs(sr.InferResponse)
	if in := sizes.last(); in.CompressedLength == 0 || in.CompressedLength >= in.Length {
		t.Errorf("stream answer: %d bytes on the wire for %d: not compressed", in.CompressedLength, in.Length)
	}
	st.CloseSend()
	// 1 MiB of zeros compresses to about 1 KB; as decompressed it is over a 64 KiB limit.
	ts.srv.SetMaxRequestBodySize(64 << 10)
	_, err = client.ModelInfer(grpcCtx(t), obsRequest("", make([]float32, 1<<18)...), grpc.UseCompressor(grpcgzip.Name))
	wantCode(t, err, codes.ResourceExhausted, "the limit is 65536 bytes (64 KiB)")
}

// payloadSizes is a client stats handler keeping the sizes of the last message received.
type payloadSizes struct {
	mu sync.Mutex
	in stats.InPayload
}

func (p *payloadSizes) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (p *payloadSizes) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (p *payloadSizes) HandleConn(context.Context, stats.ConnStats) {}
func (p *payloadSizes) HandleRPC(_ context.Context, s stats.RPCStats) {
	if in, ok := s.(*stats.InPayload); ok && in.Client {
		p.mu.Lock()
		p.in = *in
		p.mu.Unlock()
	}
}
func (p *payloadSizes) last() stats.InPayload {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.in
}

// FuzzDecompress: inflate agrees with Go's own decoders (compress/gzip, compress/zlib,
// compress/flate) on every input: the same bytes when both succeed within the limit, an error
// (400 or 413, never another status, never a panic) otherwise, and never more than the limit.
func FuzzDecompress(f *testing.F) {
	seed := []byte(`{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	f.Add(uint8(0), gzipOf(f, seed))
	f.Add(uint8(1), zlibOf(f, seed))
	f.Add(uint8(1), flateOf(f, seed))
	f.Add(uint8(0), append(gzipOf(f, seed[:9]), gzipOf(f, seed[9:])...))
	f.Add(uint8(0), gzipOf(f, make([]byte, 5000)))
	f.Add(uint8(1), zlibOf(f, make([]byte, 5000)))
	f.Add(uint8(0), []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Add(uint8(1), []byte{0x78, 0x9c})
	const limit = 4096
	f.Fuzz(func(t *testing.T, which uint8, src []byte) {
		c := codingGzip
		if which&1 == 1 {
			c = codingDeflate
		}
		got, err := inflate(c, src, limit, nil)
		if len(got) > limit+1 {
			t.Fatalf("inflated %d bytes past the limit %d", len(got), limit)
		}
		var re *requestError
		var se *statusError
		tooLarge := errors.As(err, &se) && se.status == 413
		if err != nil && !tooLarge && !errors.As(err, &re) {
			t.Fatalf("error %T %v: want 400 or 413", err, err)
		}
		// The reference: Go's standard decoders, read to one byte past the limit.
		var r io.Reader
		var rerr error
		switch {
		case c == codingGzip:
			r = &refGunzip{src: bytes.NewReader(src)}
		case len(src) >= 2 && src[0]&0x0f == 8 && src[0]>>4 <= 7 && (uint16(src[0])<<8|uint16(src[1]))%31 == 0:
			r, rerr = stdzlib.NewReader(bytes.NewReader(src))
		default:
			r = stdflate.NewReader(bytes.NewReader(src))
		}
		var want []byte
		if rerr == nil {
			want, rerr = io.ReadAll(io.LimitReader(r, limit+1))
			if rerr == nil && len(want) <= limit {
				_, rerr = io.Copy(io.Discard, r) // the end of the stream: checksums, trailing data
			}
		}
		switch {
		case rerr == nil && len(want) <= limit:
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: ours %v (%d bytes), Go's %d bytes", c, err, len(got), len(want))
			}
		case len(want) > limit:
			// Over the limit: 413, unless the stream turns out corrupt further on, which a
			// decoder may notice before it has written limit bytes (400 then).
			_, rest := io.Copy(io.Discard, io.LimitReader(r, 256<<20))
			if !tooLarge && (rest == nil || err == nil) {
				t.Fatalf("%s: Go's decoder gives over %d bytes (then %v), ours %v", c, limit, rest, err)
			}
		default: // Go's decoder fails within the limit
			if err == nil {
				t.Fatalf("%s: Go's decoder fails (%v), ours gives %d bytes", c, rerr, len(got))
			}
		}
	})
}

// refGunzip reads a gzip stream member by member with compress/gzip, refusing a member whose
// header sets a reserved flag bit as RFC 1952 (2.3.1.2) says a decoder must (compress/gzip
// does not check them).
type refGunzip struct {
	src *bytes.Reader
	z   *stdgzip.Reader
}

func (g *refGunzip) Read(p []byte) (int, error) {
	for {
		if g.z == nil {
			rest := g.src.Len()
			if rest == 0 && g.src.Size() > 0 {
				return 0, io.EOF
			}
			if rest == 0 {
				return 0, io.ErrUnexpectedEOF // no member at all: not a gzip stream
			}
			if rest >= 4 {
				var h [4]byte
				g.src.ReadAt(h[:], g.src.Size()-int64(rest))
				if h[3]&0xe0 != 0 {
					return 0, stdgzip.ErrHeader
				}
			}
			z, err := stdgzip.NewReader(g.src)
			if err != nil {
				return 0, err
			}
			z.Multistream(false)
			g.z = z
		}
		n, err := g.z.Read(p)
		if err == io.EOF {
			g.z = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// BenchmarkInferCompression runs the whole handler on the batch-32 JSON request of
// BenchmarkInferHandlerBatch32: plain (the cost of compression support for requests that do
// not use it), with a gzip request body, and with a gzip answer.
func BenchmarkInferCompression(b *testing.B) {
	m := echoBatch32Model()
	h := New(newFakeRegistry(m), nil, Options{}).Handler()
	_, data := binaryBenchRequest(32, 0)
	var sb strings.Builder
	sb.WriteString(`{"id":"bench","inputs":[{"name":"obs","shape":[32,64],"datatype":"FP32","data":[`)
	for i := 0; i < 32*64; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprint(&sb, math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])))
	}
	sb.WriteString(`]}]}`)
	plain := []byte(sb.String())
	gz := gzipOf(b, plain)
	for _, c := range []struct {
		name, encoding, accept string
		body                   []byte
	}{{"plain", "", "", plain}, {"gzip-request", "gzip", "", gz}, {"gzip-response", "", "gzip", plain}, {"gzip-both", "gzip", "gzip", gz}} {
		b.Run(c.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			b.SetBytes(int64(len(plain)))
			b.ReportAllocs()
			for b.Loop() {
				ctx.Request.Reset()
				ctx.Response.Reset()
				ctx.Request.Header.SetMethod("POST")
				ctx.Request.SetRequestURI("/v2/models/mlp/versions/1/infer")
				if c.encoding != "" {
					ctx.Request.Header.Set("Content-Encoding", c.encoding)
				}
				if c.accept != "" {
					ctx.Request.Header.Set("Accept-Encoding", c.accept)
				}
				ctx.Request.SetBody(c.body)
				h(&ctx)
				if ctx.Response.StatusCode() != 200 {
					b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
				}
				if string(ctx.Response.Header.ContentEncoding()) != c.accept { // no conversion allocated
					b.Fatalf("Content-Encoding %q", ctx.Response.Header.ContentEncoding())
				}
			}
		})
	}
}
