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

// prioQueue is a bounded FIFO per priority level, the queue of a Pool and of a Batcher. pop
// takes the oldest item of the highest level (index 0) that holds one, so a higher level
// always goes first (Triton's priority semantics). Each level holds at most its capacity;
// push never blocks.
//
// With one level it is a plain channel. With more, every item pushed is followed by a token
// on ready, and every pop takes a token before taking an item: items never number fewer than
// the tokens left plus the pops holding a token, so a pop that holds one always finds an item.
type prioQueue[T any] struct {
	levels []chan T
	ready  chan struct{} // nil with one level
	mu     sync.RWMutex  // guards closed against sends
	closed atomic.Bool
	// bell wakes a consumer over shared contexts (waitBell) without taking an item: it rings
	// on every push (and when a consumer leaves items behind), and is closed by close.
	bell chan struct{}
}

func newPrioQueue[T any](levels, capacity int) *prioQueue[T] {
	q := &prioQueue[T]{levels: make([]chan T, levels), bell: make(chan struct{}, 1)}
	for i := range q.levels {
		q.levels[i] = make(chan T, capacity)
	}
	if levels > 1 {
		q.ready = make(chan struct{}, levels*capacity)
	}
	return q
}

// push queues v at level; ErrClosed after close, ErrOverloaded when the level is full.
func (q *prioQueue[T]) push(v T, level int) error {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed.Load() {
		return ErrClosed
	}
	select {
	case q.levels[level] <- v:
	default:
		return ErrOverloaded
	}
	if q.ready != nil {
		q.ready <- struct{}{} // never blocks: ready holds every level's capacity
	}
	q.ringLocked()
	return nil
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
		v, ok := <-q.levels[0]
		return v, ok
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
		select {
		case v, ok = <-q.levels[0]:
			return v, ok, !ok
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
		select {
		case v, ok = <-q.levels[0]:
			return v, ok, false
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

// take removes the oldest item of the highest non-empty level; the caller holds a token.
func (q *prioQueue[T]) take() T {
	for {
		for _, l := range q.levels {
			select {
			case v := <-l:
				return v
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
	close(q.levels[0])
}

// capacity reports the capacity of one level.
func (q *prioQueue[T]) capacity() int { return cap(q.levels[0]) }

// len reports the items queued, over all levels.
func (q *prioQueue[T]) len() int {
	n := 0
	for _, l := range q.levels {
		n += len(l)
	}
	return n
}
