package policyd

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// nodeTests are Debian's ONNX node tests (libonnx-testdata, an older ONNX whose BF16 cast
// truncates); onnxCases the repository's cases from a current ONNX (BF16 rounds to nearest
// even, as the Cast spec of opset 19+ says).
const (
	nodeTests = "/usr/share/libonnx-testdata/data/node/"
	onnxCases = "../../testdata/onnx-cases/"
)

// rawTensor reads the dims and raw_data of an ONNX TensorProto file.
func rawTensor(t *testing.T, path string) ([]int64, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("ONNX node test data: %v (Debian's libonnx-testdata, make deps)", err)
	}
	var dims []int64
	var raw []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("%s: bad tag", path)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			dims, b = append(dims, int64(v)), b[n:]
		case num == 1 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			for len(v) > 0 {
				d, m := protowire.ConsumeVarint(v)
				dims, v = append(dims, int64(d)), v[m:]
			}
			b = b[n:]
		case num == 9:
			v, n := protowire.ConsumeBytes(b)
			raw, b = v, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				t.Fatalf("%s: bad field %d", path, num)
			}
			b = b[n:]
		}
	}
	return dims, raw
}

// TestHalfConversions: Float32ToFP16/BF16 and back equal ONNX's Cast test data
// (test_cast_FLOAT_to_FLOAT16 and the others, ONNX's reference implementation).
func TestHalfConversions(t *testing.T) {
	for _, tc := range []struct {
		dir       string
		to16      func(float32) uint16
		from16    func(uint16) float32
		narrowing bool
	}{
		{onnxCases + "test_cast_FLOAT_to_FLOAT16_opset21", Float32ToFP16, nil, true},
		{onnxCases + "test_cast_FLOAT16_to_FLOAT_opset21", nil, FP16ToFloat32, false},
		{onnxCases + "test_cast_FLOAT_to_BFLOAT16_opset21", Float32ToBF16, nil, true},
		{nodeTests + "test_cast_BFLOAT16_to_FLOAT", nil, BF16ToFloat32, false},
	} {
		_, in := rawTensor(t, tc.dir+"/test_data_set_0/input_0.pb")
		_, out := rawTensor(t, tc.dir+"/test_data_set_0/output_0.pb")
		if tc.narrowing {
			f := decode[float32](in)
			want := decode[uint16](out)
			if len(out) == len(in) { // the case casts back to FLOAT: its output is the bfloat16 widened
				for i, w := range decode[float32](out) {
					want[i] = uint16(math.Float32bits(w) >> 16)
				}
				want = want[:len(f)]
			}
			for i := range f {
				if got := tc.to16(f[i]); got != want[i] && !(f[i] != f[i] && got&0x7fff > 0x7c00) {
					t.Errorf("%s: %v → %#04x, want %#04x", tc.dir, f[i], got, want[i])
				}
			}
		} else {
			h := decode[uint16](in)
			want := decode[float32](out)
			for i := range h {
				if got := tc.from16(h[i]); math.Float32bits(got) != math.Float32bits(want[i]) && !(got != got && want[i] != want[i]) {
					t.Errorf("%s: %#04x → %v, want %v", tc.dir, h[i], got, want[i])
				}
			}
		}
	}
	// Every finite half survives the round trip through float32.
	for h := 0; h < 1<<16; h++ {
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			continue // NaN
		}
		if got := Float32ToFP16(FP16ToFloat32(uint16(h))); got != uint16(h) {
			t.Fatalf("FP16 %#04x → %v → %#04x", h, FP16ToFloat32(uint16(h)), got)
		}
		if got := Float32ToBF16(BF16ToFloat32(uint16(h))); got != uint16(h) && !(h&0x7f80 == 0x7f80 && h&0x7f != 0) {
			t.Fatalf("BF16 %#04x → %#04x", h, got)
		}
	}
}

func TestTensor(t *testing.T) {
	x := NewTensor("x", []int64{2, 2}, []int32{1, -2, 3, math.MaxInt32})
	if x.Datatype != INT32 || len(x.Data) != 16 || binary.LittleEndian.Uint32(x.Data[4:]) != uint32(0xfffffffe) {
		t.Fatalf("NewTensor: %+v", x)
	}
	if v, err := x.Int32s(); err != nil || !slices.Equal(v, []int32{1, -2, 3, math.MaxInt32}) {
		t.Errorf("Int32s: %v %v", v, err)
	}
	if _, err := x.Int64s(); err == nil || !strings.Contains(err.Error(), `tensor "x" is INT32, not INT64`) {
		t.Errorf("Int64s of INT32: %v", err)
	}
	if o := Obs([]float32{1, 2, 3}); o.Name != "" || !slices.Equal(o.Shape, []int64{3}) || o.Datatype != FP32 {
		t.Errorf("Obs: %+v", o)
	}
	bad := Tensor{Name: "b", Datatype: FP32, Shape: []int64{3}, Data: make([]byte, 8)}
	if _, err := (&Client{}).Infer(context.Background(), "m", []Tensor{bad}); err == nil || !strings.Contains(err.Error(), `tensor "b": 8 bytes of data, but shape [3] of FP32 takes 12`) {
		t.Errorf("a short tensor: %v", err)
	}
}

// TestRetryable: the retry rules, one case each.
func TestRetryable(t *testing.T) {
	for _, tc := range []struct {
		err        error
		inSequence bool
		want       bool
	}{
		{&UnavailableError{RetryAfter: time.Second, Overloaded: true}, false, true},
		{&UnavailableError{RetryAfter: time.Second}, true, true},
		{&UnavailableError{Message: "version not ready"}, false, false}, // no Retry-After: the server did not ask
		{&ConnectError{MayHaveRun: false}, false, true},
		{&ConnectError{MayHaveRun: false}, true, false}, // a sequence step: only the server's 503
		{&ConnectError{MayHaveRun: true}, false, false},
		{&InvalidArgumentError{Status: 400}, false, false},
		{&NotFoundError{}, false, false},
		{&ServerError{Status: 500}, false, false},
		{&TimeoutError{Op: "infer", Err: context.DeadlineExceeded}, false, false},
	} {
		if got, _ := retryable(tc.err, tc.inSequence); got != tc.want {
			t.Errorf("retryable(%T %+v, sequence %v) = %v, want %v", tc.err, tc.err, tc.inSequence, got, tc.want)
		}
	}
	e := error(&UnavailableError{Overloaded: true})
	if !errors.Is(e, ErrUnavailable) || !errors.Is(e, ErrOverloaded) || errors.Is(&UnavailableError{}, ErrOverloaded) {
		t.Error("errors.Is on UnavailableError")
	}
}

// TestNoReplayAfterSend: a server that reads the request and drops the connection without
// answering. The request may have run, so the client returns a ConnectError with
// MayHaveRun and sends it once, whatever its retry budget.
func TestNoReplayAfterSend(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				buf := make([]byte, 4096)
				conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				for {
					if _, err := conn.Read(buf); err != nil {
						break // read everything the client sent
					}
				}
				if tc, ok := conn.(*net.TCPConn); ok {
					tc.SetLinger(0) // a reset
				}
				conn.Close()
			}()
		}
	}()
	c, err := New("http://"+ln.Addr().String(), WithRetries(5), WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.Infer(context.Background(), "m", []Tensor{NewTensor("obs", nil, []float32{1, 2})})
	var ce *ConnectError
	if !errors.As(err, &ce) || !ce.MayHaveRun || errors.Is(err, io.EOF) == false && !strings.Contains(err.Error(), "reset") && !strings.Contains(err.Error(), "EOF") {
		t.Errorf("err = %v", err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("%d connections: the request was replayed", n)
	}
}

// TestRetryAfterHonoured: a 503 with Retry-After is retried no sooner than the server asked,
// however short the client's own backoff.
func TestRetryAfterHonoured(t *testing.T) {
	var calls atomic.Int64
	var first, second atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch calls.Add(1) {
		case 1:
			first.Store(time.Now().UnixNano())
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":"model \"m\" version \"1\": engines: queue full"}`)
		default:
			second.Store(time.Now().UnixNano())
			io.WriteString(w, `{"model_name":"m","model_version":"1","outputs":[{"name":"y","datatype":"FP32","shape":[1],"data":[3]}]}`)
		}
	}))
	defer srv.Close()
	c, err := New(srv.URL, WithRetries(2), WithBackoff(time.Millisecond, time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Infer(context.Background(), "m", []Tensor{NewTensor("x", []int64{1}, []float32{1})}, WithJSON()); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
	if wait := time.Duration(second.Load() - first.Load()); wait < time.Second {
		t.Errorf("retried after %v: the server's Retry-After of 1s was not honoured", wait)
	}
}
