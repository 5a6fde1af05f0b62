package config

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/knadh/koanf/parsers/dotenv"
)

// Files returns the files Load reads for opts, whether or not they exist now: the config
// file, the overlay files the profile may name, and the .env file.
func (opts LoadOptions) Files() []string {
	var out []string
	if opts.File != "" {
		out = append(out, opts.File)
	}
	dotPath := opts.DotEnv
	if dotPath == "" {
		dotPath = ".env"
	}
	var dot map[string]any
	if dotPath != NoDotEnv {
		out = append(out, dotPath)
		if b, err := os.ReadFile(dotPath); err == nil {
			dot, _ = dotenv.Parser().Unmarshal(b)
		}
	}
	environ := opts.Env
	if environ == nil {
		environ = os.Environ()
	}
	if p := profileOf(opts, environ, dot); p != "" && opts.File != "" && profileName.MatchString(p) {
		out = append(out, overlayFiles(opts.File, p)...)
	}
	return out
}

// Watch calls onChange when a file of opts.Files() is written, created, replaced (an
// editor's rename, a Kubernetes ConfigMap's symlink swap) or removed, once per burst of
// events within settle (100ms when 0). It watches the files' folders, so a file may come and
// go. onChange runs on Watch's goroutine, never twice at once; it would typically Load,
// and apply the new config if valid or keep the old one if not. Watch returns when ctx is
// done (nil) or the watcher fails.
func Watch(ctx context.Context, opts LoadOptions, settle time.Duration, onChange func()) error {
	return WatchFiles(ctx, opts.Files(), settle, onChange)
}

// WatchFiles is Watch for a list of files: the config's and others a reload reads, such as
// admin.token_file (a Kubernetes Secret's file is swapped through symlinks as a ConfigMap's is).
func WatchFiles(ctx context.Context, files []string, settle time.Duration, onChange func()) error {
	if settle <= 0 {
		settle = 100 * time.Millisecond
	}
	if len(files) == 0 {
		<-ctx.Done()
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch config: %w", err)
	}
	defer w.Close()
	watched := map[string]bool{}
	targets := map[string]string{} // file → the file its symlinks resolve to
	var dirs []string
	for _, f := range files {
		abs, err := filepath.Abs(f)
		if err != nil {
			return fmt.Errorf("watch config: %w", err)
		}
		watched[abs] = true
		targets[abs], _ = filepath.EvalSymlinks(abs)
		if d := filepath.Dir(abs); !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		if err := w.Add(d); err != nil {
			return fmt.Errorf("watch config folder %s: %w", d, err)
		}
	}
	// relevant: an event on a watched file, or one that moved a watched file's symlink target
	relevant := func(ev fsnotify.Event) bool {
		if watched[filepath.Clean(ev.Name)] {
			return true
		}
		changed := false
		for f, old := range targets {
			if cur, _ := filepath.EvalSymlinks(f); cur != old {
				targets[f] = cur
				changed = true
			}
		}
		return changed
	}
	timer := time.NewTimer(0)
	<-timer.C
	pending := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("watch config: the watcher closed")
			}
			if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write|fsnotify.Create|fsnotify.Remove|fsnotify.Rename) {
				continue
			}
			if relevant(ev) {
				pending = true
				timer.Reset(settle)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("watch config: the watcher closed")
			}
			return fmt.Errorf("watch config: %w", err)
		case <-timer.C:
			if pending {
				pending = false
				for f := range targets {
					targets[f], _ = filepath.EvalSymlinks(f)
				}
				onChange()
			}
		}
	}
}
