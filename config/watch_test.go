package config

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	dot := write(t, filepath.Join(dir, ".env"), "POLICYD_PROFILE=prod\n")
	got := LoadOptions{File: "c/policyd.yaml", DotEnv: dot, Env: []string{}}.Files()
	want := []string{"c/policyd.yaml", dot, "c/policyd.prod.yaml", "c/policyd.prod.yml", "c/policyd.prod.json"}
	if !slices.Equal(got, want) {
		t.Errorf("Files() = %v, want %v", got, want)
	}
	if got := (LoadOptions{File: "p.json", Profile: "x", DotEnv: NoDotEnv}).Files(); !slices.Equal(got, []string{"p.json", "p.x.json", "p.x.yaml", "p.x.yml"}) {
		t.Errorf("Files() = %v", got)
	}
}

// Watch sees writes, an editor's rename over the file, removal and re-creation, a new
// overlay, and a Kubernetes-style symlink swap; it ignores other files of the folder.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	file := write(t, filepath.Join(dir, "policyd.yaml"), "log: {level: info}\n")
	// the ConfigMap layout: policyd.yaml → ..data/policyd.yaml, ..data → ..v1
	k8s := filepath.Join(dir, "k8s")
	for _, v := range []string{"..v1", "..v2"} {
		if err := os.MkdirAll(filepath.Join(k8s, v), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(k8s, v, "policyd.yaml"), "log: {level: info}\n")
	}
	must(t, os.Symlink("..v1", filepath.Join(k8s, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "policyd.yaml"), filepath.Join(k8s, "policyd.yaml")))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan struct{}, 16)
	done := make(chan error, 2)
	opts := LoadOptions{File: file, Profile: "prod", DotEnv: NoDotEnv, Env: []string{}}
	go func() { done <- Watch(ctx, opts, 20*time.Millisecond, func() { changes <- struct{}{} }) }()
	go func() {
		done <- Watch(ctx, LoadOptions{File: filepath.Join(k8s, "policyd.yaml"), DotEnv: NoDotEnv, Env: []string{}}, 20*time.Millisecond,
			func() { changes <- struct{}{} })
	}()
	time.Sleep(100 * time.Millisecond) // let the watchers start

	expect := func(what string, change bool) {
		t.Helper()
		select {
		case <-changes:
			if !change {
				t.Errorf("%s: a change was reported", what)
			}
		case <-time.After(map[bool]time.Duration{true: 3 * time.Second, false: 200 * time.Millisecond}[change]):
			if change {
				t.Errorf("%s: no change reported", what)
			}
		}
		// drain a burst that settled in two parts
		time.Sleep(50 * time.Millisecond)
		for len(changes) > 0 {
			<-changes
		}
	}
	write(t, file, "log: {level: debug}\n")
	expect("write", true)
	write(t, filepath.Join(dir, "other.yaml"), "x: 1\n")
	expect("another file", false)
	tmp := write(t, filepath.Join(dir, ".policyd.yaml.swp"), "log: {level: warn}\n")
	must(t, os.Rename(tmp, file))
	expect("rename over", true)
	must(t, os.Remove(file))
	expect("remove", true)
	write(t, file, "log: {level: info}\n")
	expect("re-create", true)
	write(t, filepath.Join(dir, "policyd.prod.yaml"), "log: {level: warn}\n")
	expect("new overlay", true)
	// the ConfigMap update: a new ..data link renamed over the old one
	must(t, os.Symlink("..v2", filepath.Join(k8s, "..data_tmp")))
	must(t, os.Rename(filepath.Join(k8s, "..data_tmp"), filepath.Join(k8s, "..data")))
	expect("symlink swap", true)

	cancel()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch: %v", err)
			}
		case <-time.After(3 * time.Second):
			t.Fatal("Watch did not return after cancel")
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// WatchFiles watches files of several folders: the config file and a token file mounted from
// a Kubernetes Secret (token → ..data/token, ..data → ..v1), whose update swaps ..data.
func TestWatchFiles(t *testing.T) {
	dir := t.TempDir()
	must(t, os.MkdirAll(filepath.Join(dir, "cfg"), 0o755))
	cfg := write(t, filepath.Join(dir, "cfg", "policyd.yaml"), "log: {level: info}\n")
	secret := filepath.Join(dir, "secret")
	for _, v := range []string{"..v1", "..v2"} {
		must(t, os.MkdirAll(filepath.Join(secret, v), 0o755))
		write(t, filepath.Join(secret, v, "token"), "token-"+v+"\n")
	}
	must(t, os.Symlink("..v1", filepath.Join(secret, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "token"), filepath.Join(secret, "token")))

	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() {
		done <- WatchFiles(ctx, []string{cfg, filepath.Join(secret, "token")}, 20*time.Millisecond, func() { changes <- struct{}{} })
	}()
	time.Sleep(100 * time.Millisecond) // let the watcher start
	expect := func(what string) {
		t.Helper()
		select {
		case <-changes:
		case <-time.After(3 * time.Second):
			t.Errorf("%s: no change reported", what)
		}
		time.Sleep(50 * time.Millisecond)
		for len(changes) > 0 {
			<-changes
		}
	}
	must(t, os.Symlink("..v2", filepath.Join(secret, "..data_tmp")))
	must(t, os.Rename(filepath.Join(secret, "..data_tmp"), filepath.Join(secret, "..data")))
	expect("the Secret's symlink swap")
	write(t, cfg, "log: {level: debug}\n")
	expect("the config file")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchFiles: %v", err)
	}
}
