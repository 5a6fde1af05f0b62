//go:build cgo

package policyd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEpisode: three steps of an Episode of peers-lstm (the server carries h and c) equal
// three stateless steps where the client carries h_out, c_out into h_in, c_in itself; Close
// ends the sequence on the server, and is safe to call twice. Over HTTP and gRPC.
func TestEpisode(t *testing.T) {
	repo := t.TempDir()
	linkModel(t, repo, "lstm", "../shared/peers/models/lstm.onnx")
	d := startDaemon(t, repo, `models:
  - name: lstm
    sequence: {states: ["h_in:h_out", "c_in:c_out"]}
`)
	hc, gc := clients(t, d)
	ctx := context.Background()
	obs := make([][]float32, 3)
	for s := range obs {
		obs[s] = make([]float32, 32)
		for i := range obs[s] {
			obs[s][i] = float32(math.Sin(float64(7*s+i))) / 2
		}
	}
	for _, c := range []*Client{hc, gc} {
		// The client carries the state.
		h := NewTensor("h_in", []int64{1, 1, 128}, make([]float32, 128))
		cc := NewTensor("c_in", []int64{1, 1, 128}, make([]float32, 128))
		var want [][]float32
		for s := range obs {
			res, err := c.Infer(ctx, "lstm", []Tensor{NewTensor("obs", []int64{1, 32}, obs[s]), h, cc})
			if err != nil {
				t.Fatal(err)
			}
			a, _ := res.Output("action")
			v, _ := a.Float32s()
			want = append(want, v)
			h, _ = res.Output("h_out")
			cc, _ = res.Output("c_out")
			h.Name, cc.Name = "h_in", "c_in"
		}
		// The server carries it.
		p := NewPolicy(c, "lstm")
		ep, err := p.Episode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		for s := range obs {
			a, err := ep.Act(ctx, Obs(obs[s]))
			if err != nil {
				t.Fatalf("step %d: %v", s, err)
			}
			got, _ := a.Float32s()
			if !slices.Equal(a.Shape, []int64{8}) {
				t.Errorf("step %d: action shape %v, want [8]", s, a.Shape)
			}
			for i := range got {
				if math.Abs(float64(got[i]-want[s][i])) > 1e-6+1e-5*math.Abs(float64(want[s][i])) {
					t.Fatalf("step %d: action[%d] = %v in the episode, %v with the state carried by the client", s, i, got[i], want[s][i])
				}
			}
		}
		if slices.Equal(want[1], want[2]) || slices.Equal(want[0], want[1]) {
			t.Fatalf("the steps did not differ: %v", want)
		}
		if err := ep.Close(); err != nil {
			t.Fatal(err)
		}
		if err := ep.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if _, err := ep.Act(ctx, Obs(obs[0])); err == nil {
			t.Error("Act after Close: no error")
		}
		// The server dropped the sequence: a further step of it is refused, with its message.
		_, err = c.Infer(ctx, "lstm", []Tensor{NewTensor("obs", []int64{1, 32}, obs[0])}, WithSequence(ep.ID(), false, false))
		var ia *InvalidArgumentError
		if !errors.As(err, &ia) || !strings.Contains(ia.Message, ep.ID()) {
			t.Errorf("a step after the episode's end: %v", err)
		}
	}
}

// TestEpisodeHallway: ML-Agents' Hallway (three inputs, a stochastic discrete action, state
// recurrent_in → recurrent_out [N,1,128]) through Episode.ActAll with a seed per step equals
// the same seeded steps with the state carried by the client: every output, both protocols.
func TestEpisodeHallway(t *testing.T) {
	repo := t.TempDir()
	linkModel(t, repo, "hallway", "../shared/models/mlagents/Hallway.onnx")
	d := startDaemon(t, repo, `models:
  - name: hallway
    sequence: {states: ["recurrent_in:recurrent_out"]}
`)
	hc, gc := clients(t, d)
	ctx := context.Background()
	obs := func(s int) []Tensor {
		o := make([]float32, 105)
		for i := range o {
			o[i] = float32(math.Cos(float64(3*s+i))) / 3
		}
		return []Tensor{NewTensor("obs_0", []int64{105}, o), NewTensor("obs_1", []int64{3}, []float32{0, float32(s % 2), 1}),
			NewTensor("action_masks", []int64{5}, []float32{1, 1, 1, 1, 1})}
	}
	batched := func(ts []Tensor) []Tensor {
		out := slices.Clone(ts)
		for i := range out {
			out[i].Shape = append([]int64{1}, out[i].Shape...)
		}
		return out
	}
	for _, c := range []*Client{hc, gc} {
		state := NewTensor("recurrent_in", []int64{1, 1, 128}, make([]float32, 128))
		var want []*InferResult
		for s := 0; s < 3; s++ {
			res, err := c.Infer(ctx, "hallway", append(batched(obs(s)), state), WithSeed(uint64(100+s)))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, res)
			state, _ = res.Output("recurrent_out")
			state.Name = "recurrent_in"
		}
		ep, err := NewPolicy(c, "hallway").Episode(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for s := 0; s < 3; s++ {
			got, err := ep.ActAll(ctx, obs(s), WithSeed(uint64(100+s)))
			if err != nil {
				t.Fatalf("step %d: %v", s, err)
			}
			for _, name := range []string{"discrete_actions", "recurrent_out"} {
				w, _ := want[s].Output(name)
				g := got[name]
				wv, _ := w.AsFloat64()
				gv, _ := g.AsFloat64()
				if len(gv) != len(wv) || len(g.Shape) != len(w.Shape)-1 {
					t.Fatalf("step %d: %s shape %v, want %v without the batch dimension", s, name, g.Shape, w.Shape)
				}
				for i := range wv {
					if math.Abs(gv[i]-wv[i]) > 1e-6+1e-5*math.Abs(wv[i]) {
						t.Fatalf("step %d: %s[%d] = %v in the episode, %v with the state carried by the client", s, name, i, gv[i], wv[i])
					}
				}
			}
		}
		if err := ep.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// countingTransport counts the HTTP requests that reach the network layer.
type countingTransport struct {
	n    atomic.Int64
	base http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.base.RoundTrip(r)
}

// TestRetriesOverloaded: against a server with a queue of one and a 2ms queue timeout, a
// burst of concurrent calls gets 503s with Retry-After; the client retries exactly those,
// within its bound, and the server's own request count equals the attempts the client made
// (stats: success + fail), so nothing else was sent. A 400 is not retried: the server counts
// one request.
func TestRetriesOverloaded(t *testing.T) {
	repo := t.TempDir()
	linkModel(t, repo, "cnn", "../shared/peers/models/cnn-atari.onnx")
	d := startDaemon(t, repo, `limits: {queue_len: 1, queue_timeout: 2ms}
batching: {enabled: false}
models:
  - name: cnn
    instances: 1
`)
	ctx := context.Background()
	m, err := func() (*ModelMetadata, error) {
		c, _ := New(d.url)
		defer c.Close()
		return c.Metadata(ctx, "cnn", "")
	}()
	if err != nil {
		t.Fatal(err)
	}
	shape := slices.Clone(m.Inputs[0].Shape)
	shape[0] = 8
	n := int64(1)
	for _, x := range shape {
		n *= x
	}
	obs := []Tensor{NewTensor(m.Inputs[0].Name, shape, make([]float32, n))}

	burst := func(retries int) (calls, ok, overloaded int, attempts int64) {
		ct := &countingTransport{base: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
		c, err := New(d.url, WithRetries(retries), WithBackoff(5*time.Millisecond, 40*time.Millisecond), WithHTTPClient(&http.Client{Transport: ct}))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for g := 0; g < 12; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5; i++ {
					_, err := c.Infer(ctx, "cnn", obs)
					mu.Lock()
					calls++
					var u *UnavailableError
					switch {
					case err == nil:
						ok++
					case errors.As(err, &u) && errors.Is(err, ErrOverloaded) && u.RetryAfter == time.Second:
						overloaded++
					default:
						t.Errorf("unexpected error: %v", err)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return calls, ok, overloaded, ct.n.Load()
	}

	s0, f0 := d.stats(t, "cnn")
	calls, ok, over, attempts := burst(0)
	s1, f1 := d.stats(t, "cnn")
	t.Logf("no retries: %d calls, %d ok, %d overloaded, %d attempts; server: %d success %d fail", calls, ok, over, attempts, s1-s0, f1-f0)
	if over == 0 {
		t.Fatal("the burst overloaded nothing: the test cannot show retries")
	}
	if attempts != int64(calls) || (s1-s0)+(f1-f0) != attempts || s1-s0 != int64(ok) {
		t.Errorf("without retries: %d calls, %d attempts, server counted %d+%d", calls, attempts, s1-s0, f1-f0)
	}
	calls, ok2, over2, attempts := burst(6)
	s2, f2 := d.stats(t, "cnn")
	t.Logf("6 retries: %d calls, %d ok, %d overloaded, %d attempts; server: %d success %d fail", calls, ok2, over2, attempts, s2-s1, f2-f1)
	if attempts <= int64(calls) || attempts > int64(calls)*7 {
		t.Errorf("with 6 retries: %d calls made %d attempts", calls, attempts)
	}
	if (s2-s1)+(f2-f1) != attempts || s2-s1 != int64(ok2) {
		t.Errorf("server counted %d success + %d fail for %d attempts, %d ok", s2-s1, f2-f1, attempts, ok2)
	}
	if ok2 <= ok {
		t.Errorf("retries did not help: %d ok with, %d without", ok2, ok)
	}

	// A bad request is not retried.
	ct := &countingTransport{base: &http.Transport{}}
	c, _ := New(d.url, WithRetries(5), WithHTTPClient(&http.Client{Transport: ct}))
	defer c.Close()
	bad := []Tensor{NewTensor(m.Inputs[0].Name, []int64{1, 3}, make([]float32, 3))}
	_, err = c.Infer(ctx, "cnn", bad)
	s3, f3 := d.stats(t, "cnn")
	if !errors.Is(err, ErrInvalidArgument) || ct.n.Load() != 1 || s3 != s2 || f3-f2 != 1 {
		t.Errorf("bad request: %v; %d attempts; server +%d fail", err, ct.n.Load(), f3-f2)
	}
}

// TestIdleKeepAlive: the server closes keep-alive connections idle for 100ms; the client,
// with its idle timeout below that (50ms), reuses its pool after pauses around and beyond
// both. No call fails, and the server counts exactly one request per call (nothing
// replayed). gRPC (the server's GOAWAY on idle connections) the same. Then, logged only, the
// race this avoids: clients whose idle timeout is longer than the server's (net/http and
// fasthttp) send some requests on a connection the server is closing; net/http re-sends
// those it had not written, and both return an error (not retried) for the others.
func TestIdleKeepAlive(t *testing.T) {
	repo := t.TempDir()
	linkModel(t, repo, "mlp", "../shared/peers/models/mlp-small.onnx")
	d := startDaemon(t, repo, "server: {idle_timeout: 100ms}\n")
	ctx := context.Background()
	obs := []Tensor{NewTensor("obs", []int64{1, 8}, make([]float32, 8))}
	pauses := []time.Duration{0, 30, 45, 49, 50, 51, 55, 90, 95, 99, 100, 101, 105, 110, 150, 250, 0, 99, 101}
	run := func(c *Client) (calls, errs int, first error) {
		for _, pause := range pauses {
			time.Sleep(pause * time.Millisecond)
			calls++
			if _, err := c.Infer(ctx, "mlp", obs); err != nil {
				errs++
				if first == nil {
					first = fmt.Errorf("after %dms idle: %w", pause, err)
				}
			}
		}
		return
	}
	hc, gc := clients(t, d, WithRetries(0), WithIdleConnTimeout(50*time.Millisecond))
	total := 0
	for _, c := range []*Client{hc, gc} {
		calls, errs, first := run(c)
		total += calls
		if errs > 0 {
			t.Errorf("%d of %d calls failed; the first %v", errs, calls, first)
		}
	}
	s, f := d.stats(t, "mlp")
	if s != int64(total) || f != 0 {
		t.Errorf("server counted %d success %d fail for %d calls", s, f, total)
	}
	for _, tc := range []struct {
		name string
		idle time.Duration
		opts []Option
	}{{"net/http", time.Minute, nil}, {"fasthttp", time.Minute, []Option{withFastHTTP()}}, {"fasthttp", 50 * time.Millisecond, []Option{withFastHTTP()}}} {
		c, err := New(d.url, append(tc.opts, WithRetries(0), WithIdleConnTimeout(tc.idle))...)
		if err != nil {
			t.Fatal(err)
		}
		s0, _ := d.stats(t, "mlp")
		calls, errs, first := run(c)
		s1, _ := d.stats(t, "mlp")
		c.Close()
		t.Logf("%s with a %v idle timeout: %d calls, %d errors, %d ran on the server; the first error: %v", tc.name, tc.idle, calls, errs, s1-s0, first)
	}
}

// TestReadmeSnippet: README's "## Use it from Go" program compiles and prints what the
// README shows, against a server with 3DBall (only the address is substituted).
func TestReadmeSnippet(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	sec := string(readme)
	i := strings.Index(sec, "\n## Use it from Go\n")
	if i < 0 {
		t.Fatal(`README has no "## Use it from Go"`)
	}
	sec = sec[i+1:]
	if j := strings.Index(sec[3:], "\n## "); j >= 0 {
		sec = sec[:j+3]
	}
	blocks := regexp.MustCompile("(?s)```(\\w*)\n(.*?)```").FindAllStringSubmatch(sec, -1)
	var prog, want string
	for k, b := range blocks {
		if b[1] == "go" && prog == "" {
			prog = b[2]
			if k+1 < len(blocks) && blocks[k+1][1] == "" {
				want = blocks[k+1][2]
			}
		}
	}
	if prog == "" || want == "" {
		t.Fatal("the section lacks a ```go block followed by its output")
	}
	d, _ := mainDaemon(t)
	if !strings.Contains(prog, `"http://127.0.0.1:8000"`) {
		t.Fatal("the program does not name http://127.0.0.1:8000")
	}
	prog = strings.ReplaceAll(prog, `"http://127.0.0.1:8000"`, `"`+d.url+`"`)
	dir, err := os.MkdirTemp(".", "_readme-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "run", "./"+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("go run: %v\n%s", err, out)
	}
	if string(out) != want {
		t.Errorf("the program printed\n%s\nthe README shows\n%s", out, want)
	}
}
