package check

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
)

// DNS passes when the server at address answers a query for name and typ
// (class IN, over proto "udp" or "tcp") with RCODE NOERROR and at least
// one answer record. A truncated UDP answer passes on its RCODE alone: the
// server is serving.
func DNS(address, proto, name string, typ uint16) Probe {
	want := fqdn(name)
	return func(ctx context.Context, dial Dialer) Result {
		id := uint16(rand.Uint32())
		q, err := appendQuery(make([]byte, 2, 2+headerLen+maxNameLen+4), id, name, typ)
		if err != nil {
			return Result{Detail: err.Error()}
		}
		if proto != "tcp" {
			proto = "udp"
		}
		c, err := dial.DialContext(ctx, proto, address)
		if err != nil {
			return fail(ctx, err)
		}
		defer c.Close()
		defer bind(ctx, c)()

		var m *dnsMessage
		if proto == "tcp" {
			binary.BigEndian.PutUint16(q, uint16(len(q)-2))
			if _, err := c.Write(q); err != nil {
				return fail(ctx, err)
			}
			var l [2]byte
			if _, err := io.ReadFull(c, l[:]); err != nil {
				return fail(ctx, err)
			}
			buf := make([]byte, binary.BigEndian.Uint16(l[:]))
			if _, err := io.ReadFull(c, buf); err != nil {
				return fail(ctx, err)
			}
			if m, err = parseDNS(buf); err != nil {
				return Result{Detail: "bad response: " + err.Error()}
			}
			if err := matches(m, id, want, typ); err != nil {
				return Result{Detail: "bad response: " + err.Error()}
			}
		} else {
			if _, err := c.Write(q[2:]); err != nil {
				return fail(ctx, err)
			}
			// Skip datagrams that do not answer this query (late answers
			// to an earlier one, forgeries) until the deadline.
			buf := make([]byte, 65535)
			for m == nil {
				n, err := c.Read(buf)
				if err != nil {
					return fail(ctx, err)
				}
				if r, err := parseDNS(buf[:n]); err == nil && matches(r, id, want, typ) == nil {
					m = r
				}
			}
		}
		return verdict(m)
	}
}

// matches checks that m answers the query id for name and typ.
func matches(m *dnsMessage, id uint16, name string, typ uint16) error {
	switch {
	case m.ID != id:
		return fmt.Errorf("id %d, want %d", m.ID, id)
	case m.Flags&flagQR == 0:
		return errors.New("not a response")
	case len(m.Questions) != 1 || !strings.EqualFold(m.Questions[0].Name, name) || m.Questions[0].Type != typ || m.Questions[0].Class != classIN:
		return errors.New("the question does not match the query")
	}
	return nil
}

func verdict(m *dnsMessage) Result {
	rc := m.rcode()
	switch {
	case rc != rcodeNoError:
		return Result{Detail: "rcode " + rcodeString(rc)}
	case m.Flags&flagTC != 0:
		return Result{OK: true, Detail: "NOERROR, truncated"}
	case len(m.Answers) == 0:
		return Result{Detail: "NOERROR but no answer"}
	}
	return Result{OK: true, Detail: fmt.Sprintf("NOERROR, %d answers", len(m.Answers))}
}
