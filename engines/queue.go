package engines

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// MaxPriorityLevels bounds PoolOptions.PriorityLevels and BatcherOptions.PriorityLevels.
const MaxPriorityLevels = 16

// PriorityError is returned by Do for a request whose RunOptions.Priority is outside the
// runner's levels. The HTTP layer answers it 400.
type PriorityError struct {
	Priority, Levels int
}

func (e *PriorityError) Error() string {
	return fmt.Sprintf("priority %d is out of range: this model has %d priority level(s), 1 the highest (0 = the default level)", e.Priority, e.Levels)
}

// priorities is the priority-level setting of a queue, checked and defaulted.
type priorities struct {
	levels int // >= 1
	def    int // 1..levels
}

// newPriorities checks levels (0 = one level) and def (0 = the lowest level).
func newPriorities(levels, def int) (priorities, error) {
	switch {
	case levels < 0 || levels > MaxPriorityLevels:
		return priorities{}, fmt.Errorf("priority levels %d out of range 0..%d", levels, MaxPriorityLevels)
	case levels == 0:
		levels = 1
	}
	switch {
	case def < 0 || def > levels:
		return priorities{}, fmt.Errorf("default priority level %d out of range 1..%d", def, levels)
	case def == 0:
		def = levels
	}
	return priorities{levels, def}, nil
}

// level maps a request's RunOptions.Priority to a queue index (0 = the highest level).
func (p priorities) level(priority int) (int, error) {
	switch {
	case priority == 0:
		return p.def - 1, nil
	case priority < 0 || priority > p.levels:
		return 0, &PriorityError{Priority: priority, Levels: p.levels}
	}
	return priority - 1, nil
}

// prioQueue is the queue of a Pool and of a Batcher: per priority level, the items with a
// deadline in earliest-deadline-first order, then the items without one in FIFO order. pop
// takes from the highest level (index 0) that holds an item, so a higher level always goes
// first (Triton's priority semantics); within a level an item with a deadline goes before
// every item without one, the earliest deadline first (ties in arrival order). Each level
// holds at most its capacity, with and without deadlines together; push never blocks.
//
// Each level is a channel of entries: an item without a deadline is itself an entry; an item
// with a deadline goes into the level's heap (under its lock) and a token entry takes its
// place in the channel. Whoever receives an entry resolves it (level.resolve): a token takes
// the level's earliest item; a plain item is returned as it is while the level holds no
// deadline item (one atomic load: the path without deadlines stays a channel operation), else
// it is parked at the tail of the level's early list (items without a deadline that left the
// channel before their turn) and the earliest deadline item is returned instead.
//
// With one level that is all. With more, every entry pushed is followed by a token on ready,
// and every pop takes a token before taking an entry: entries never number fewer than the
// tokens left plus the pops holding a token, so a pop that holds one always finds an entry.
type prioQueue[T any] struct {
	levels []*level[T]
	ready  chan struct{} // nil with one level
	mu     sync.RWMutex  // guards closed against sends
	closed atomic.Bool
	// bell wakes a consumer over shared contexts (waitBell) without taking an item: it rings
	// on every push (and when a consumer leaves items behind), and is closed by close.
	bell chan struct{}
}

// entry is what a level's channel holds: an item without a deadline, or (tok) the place of
// an item in the level's heap.
type entry[T any] struct {
	v   T
	tok bool
}

// level is one priority level of a prioQueue.
type level[T any] struct {
	ch chan entry[T]
	n  atomic.Int32 // len(heap) + len(early): the items resolve must look at

	mu    sync.Mutex
	heap  []dlItem[T] // a binary min-heap by (deadline, seq)
	early []T         // items without a deadline taken out of ch ahead of time, oldest first
	seq   uint64
}

type dlItem[T any] struct {
	v   T
	dl  int64 // deadline, ns since the epoch
	seq uint64
}

func (a *dlItem[T]) before(b *dlItem[T]) bool { return a.dl < b.dl || a.dl == b.dl && a.seq < b.seq }

func newPrioQueue[T any](levels, capacity int) *prioQueue[T] {
	q := &prioQueue[T]{levels: make([]*level[T], levels), bell: make(chan struct{}, 1)}
	for i := range q.levels {
		q.levels[i] = &level[T]{ch: make(chan entry[T], capacity)}
	}
	if levels > 1 {
		q.ready = make(chan struct{}, levels*capacity)
	}
	return q
}

// push queues v without a deadline at level; ErrClosed after close, ErrOverloaded when the
// level is full.
func (q *prioQueue[T]) push(v T, level int) error { return q.pushDeadline(v, level, 0) }

// pushDeadline queues v at level with deadline dl (ns since the epoch; 0: none).
func (q *prioQueue[T]) pushDeadline(v T, level int, dl int64) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed.Load() {
		return ErrClosed
	}
	l := q.levels[level]
	if dl == 0 {
		select {
		case l.ch <- entry[T]{v: v}:
		default:
			return ErrOverloaded
		}
	} else if !l.pushHeap(v, dl) {
		return ErrOverloaded
	}
	if q.ready != nil {
		q.ready <- struct{}{} // never blocks: ready holds every level's capacity
	}
	q.ringLocked()
	return nil
}

// pushHeap puts v in the heap and its token in the channel, both under l.mu, so that whoever
// receives the token finds the item once it holds l.mu; false when the level is full.
func (l *level[T]) pushHeap(v T, dl int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case l.ch <- entry[T]{tok: true}:
	default:
		return false
	}
	l.seq++
	l.heap = append(l.heap, dlItem[T]{v: v, dl: dl, seq: l.seq})
	for i := len(l.heap) - 1; i > 0; { // sift up
		p := (i - 1) / 2
		if !l.heap[i].before(&l.heap[p]) {
			break
		}
		l.heap[i], l.heap[p] = l.heap[p], l.heap[i]
		i = p
	}
	l.n.Add(1)
	return true
}

// resolve turns an entry received from l.ch into the item to serve (see prioQueue).
func (l *level[T]) resolve(e entry[T]) T {
	if !e.tok && l.n.Load() == 0 {
		return e.v
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var v T
	switch {
	case len(l.heap) > 0:
		v = l.popHeap()
	case len(l.early) > 0:
		v = l.early[0]
		var zero T
		l.early[0] = zero
		l.early = l.early[1:]
		if len(l.early) == 0 {
			l.early = l.early[:0:0]
		}
	default: // a plain entry, and a concurrent resolve took what was parked meanwhile
		return e.v
	}
	if e.tok {
		l.n.Add(-1)
	} else {
		l.early = append(l.early, e.v) // it keeps its place before the entries still in ch
	}
	return v
}

func (l *level[T]) popHeap() T {
	h := l.heap
	v := h[0].v
	last := len(h) - 1
	h[0] = h[last]
	h[last] = dlItem[T]{}
	h = h[:last]
	for i := 0; ; { // sift down
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if c+1 < len(h) && h[c+1].before(&h[c]) {
			c++
		}
		if !h[c].before(&h[i]) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	l.heap = h
	return v
}

// waitBell waits until an item may be queued (or the queue is closed), without taking one: a
// consumer over shared contexts first gets a context, then tries to pop (tryPop), so that an
// item is taken only when it can run, stays cancellable and keeps its place until then.
func (q *prioQueue[T]) waitBell() { <-q.bell }

// ring wakes one consumer waiting in waitBell; a no-op once closed.
func (q *prioQueue[T]) ring() {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if !q.closed.Load() {
		q.ringLocked()
	}
}

func (q *prioQueue[T]) ringLocked() {
	select {
	case q.bell <- struct{}{}:
	default: // already rung: the consumer it wakes looks at every item
	}
}

// pop waits for an item; false once the queue is closed and empty.
func (q *prioQueue[T]) pop() (T, bool) {
	if q.ready == nil {
		l := q.levels[0]
		e, ok := <-l.ch
		if !ok {
			return e.v, false
		}
		return l.resolve(e), true
	}
	if _, ok := <-q.ready; !ok {
		var zero T
		return zero, false
	}
	return q.take(), true
}

// tryPop takes an item if one is queued. closed reports a closed, empty queue.
func (q *prioQueue[T]) tryPop() (v T, ok, closed bool) {
	if q.ready == nil {
		l := q.levels[0]
		select {
		case e, ok := <-l.ch:
			if !ok {
				return v, false, true
			}
			return l.resolve(e), true, false
		default:
			return v, false, false
		}
	}
	select {
	case _, ok = <-q.ready:
		if !ok {
			return v, false, true
		}
		return q.take(), true, false
	default:
		return v, false, false
	}
}

// popUntil waits for an item until timeout fires; timedOut reports that it did.
func (q *prioQueue[T]) popUntil(timeout <-chan time.Time) (v T, ok, timedOut bool) {
	if q.ready == nil {
		l := q.levels[0]
		select {
		case e, ok := <-l.ch:
			if !ok {
				return v, false, false
			}
			return l.resolve(e), true, false
		case <-timeout:
			return v, false, true
		}
	}
	select {
	case _, ok = <-q.ready:
		if !ok {
			return v, false, false
		}
		return q.take(), true, false
	case <-timeout:
		return v, false, true
	}
}

// take removes the first item of the highest non-empty level; the caller holds a token.
func (q *prioQueue[T]) take() T {
	for {
		for _, l := range q.levels {
			select {
			case e := <-l.ch:
				return l.resolve(e)
			default:
			}
		}
		// A concurrent pop took the item we passed at a higher level while ours is being
		// queued at a lower one (its push is between the item and the token): look again.
	}
}

// close refuses further pushes; items queued are still popped. Idempotent.
func (q *prioQueue[T]) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed.Swap(true) {
		return
	}
	close(q.bell)
	if q.ready != nil {
		close(q.ready)
		return
	}
	close(q.levels[0].ch)
}

// capacity reports the capacity of one level.
func (q *prioQueue[T]) capacity() int { return cap(q.levels[0].ch) }

// ahead reports about how many queued items a new item with a deadline at level would wait
// behind: every item of the higher levels and the deadline items of its own (those without a
// deadline go after it; a later deadline too, which this count does not tell apart: it errs
// towards more). Lock-free, a snapshot.
func (q *prioQueue[T]) ahead(level int) int {
	n := int(q.levels[level].n.Load())
	for _, l := range q.levels[:level] {
		n += len(l.ch)
	}
	return n
}

// len reports the items queued, over all levels.
func (q *prioQueue[T]) len() int {
	n := 0
	for _, l := range q.levels {
		n += len(l.ch)
	}
	return n
}
