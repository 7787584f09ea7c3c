package tunnel

import (
	"os"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// handoffTUN is built as wireguard-go's netstack is: what a Write makes
// the stack send goes to Read over an unbuffered channel, which Close
// closes.
type handoffTUN struct {
	tun.Device
	out     chan []byte
	handing chan struct{} // a Write waits to hand a packet over
}

func (h *handoffTUN) Write(bufs [][]byte, offset int) (int, error) {
	h.handing <- struct{}{}
	h.out <- append([]byte(nil), bufs[0][offset:]...) // an answer at once, as an ICMP error
	return len(bufs), nil
}

func (h *handoffTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	p, ok := <-h.out
	if !ok {
		return 0, os.ErrClosed
	}
	sizes[0] = copy(bufs[0][offset:], p)
	return 1, nil
}

func (h *handoffTUN) Close() error {
	close(h.out)
	return nil
}

// TestNetstackCloseWhileWriting: a netstack host closes while a Write
// waits to hand the stack's answer to a reader that is gone (the
// WireGuard device stopped reading to close it). Closing the handoff
// under the waiting Write would panic the process; Close takes the answer,
// lets the Write finish, then closes, and a later Write gets an error.
func TestNetstackCloseWhileWriting(t *testing.T) {
	h := &handoffTUN{out: make(chan []byte), handing: make(chan struct{}, 1)}
	ot := &onceTUN{Device: h, drain: true}
	wrote := make(chan error, 1)
	go func() {
		_, err := ot.Write([][]byte{[]byte("packet")}, 0)
		wrote <- err
	}()
	<-h.handing
	if err := ot.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-wrote:
		if err != nil {
			t.Errorf("the Write under way at Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the Write under way at Close never returned")
	}
	if _, err := ot.Write([][]byte{[]byte("late")}, 0); err == nil {
		t.Error("a Write after Close succeeded")
	}
}
