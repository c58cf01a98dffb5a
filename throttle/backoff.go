package throttle

import "time"

// Backoff doubles a delay on each consecutive failure, from Min up to Max,
// and starts over after Reset. The zero value is not useful; use NewBackoff.
type Backoff struct {
	min, max time.Duration
	next     time.Duration
	failures int
}

// NewBackoff returns a backoff that starts at min and never exceeds max.
func NewBackoff(min, max time.Duration) *Backoff {
	return &Backoff{min: min, max: max, next: min}
}

// Fail records a failure and returns how long to wait before trying again.
func (b *Backoff) Fail() time.Duration {
	d := b.next
	b.failures++
	b.next *= 2
	if b.next > b.max {
		b.next = b.max
	}
	return d
}

// Reset forgets earlier failures after a success.
func (b *Backoff) Reset() {
	b.next = b.min
	b.failures = 0
}

// Failures is the number of consecutive failures since the last Reset.
func (b *Backoff) Failures() int { return b.failures }
