package overlay

import (
	"strings"
	"testing"
)

func TestRulesComplete(t *testing.T) {
	for ty := TypeJoin; ty < typeEnd; ty++ {
		r := rules[ty]
		if r.From == 0 || r.To == 0 {
			t.Errorf("%v has no rule: %+v", ty, r)
		}
		// A proxy never accepts what it sends edges, and edges send
		// proxies only what a proxy accepts.
		if (r.To&DestEdge != 0) != (r.To == DestEdge) {
			t.Errorf("%v goes to edges and to proxies: %v", ty, r.To)
		}
		if r.To == DestEdge && r.From != SenderProxy {
			t.Errorf("%v goes to edges from %v", ty, r.From)
		}
		if r.Relay && r.From != SenderProxy {
			t.Errorf("%v is relayed, but comes from %v", ty, r.From)
		}
	}
	if r := rules[0]; r != (Rule{}) {
		t.Errorf("type 0 has a rule: %+v", r)
	}
}

// TestPermit checks Permit against the rules of each type: the table
// below is the protocol as the handlers have it, stated once more.
func TestPermit(t *testing.T) {
	type combo struct {
		from Sender
		to   Dest
	}
	p, tg, cl := SenderProxy, SenderTarget, SenderClient
	permitted := map[Type][]combo{
		TypeJoin:         {{tg, DestAnycast}},
		TypeKeepalive:    {{tg, DestAnycast}},
		TypeLeave:        {{tg, DestAnycast}, {tg, DestSelf}, {tg, DestSelf6}},
		TypeJoinAck:      {{p, DestEdge}},
		TypeKeepaliveAck: {{p, DestEdge}},
		TypeDrain:        {{tg, DestAnycast}},
		TypeDrainAck:     {{p, DestEdge}},
		TypeProxiesReq:   {{tg, DestSelf}, {tg, DestSelf6}, {cl, DestSelf}, {cl, DestSelf6}},
		TypeProxies:      {{p, DestEdge}},
	}
	for ty := TypeJoin; ty < typeEnd; ty++ {
		if _, ok := permitted[ty]; !ok {
			permitted[ty] = []combo{{p, DestSelf}} // between proxies
		}
	}
	for ty := TypeJoin; ty < typeEnd; ty++ {
		for _, from := range []Sender{0, SenderProxy, SenderTarget, SenderClient} {
			for _, to := range []Dest{0, DestSelf, DestSelf6, DestAnycast, DestEdge} {
				want := false
				for _, c := range permitted[ty] {
					want = want || c == combo{from, to}
				}
				err := Permit(ty, from, to)
				if (err == nil) != want {
					t.Errorf("Permit(%v, %v, %v) = %v, want permitted %v", ty, from, to, err, want)
				}
				if err != nil && (!strings.HasPrefix(err.Error(), "pias rules: "+ty.String()+" from ") || strings.Contains(err.Error(), "\n")) {
					t.Errorf("Permit(%v, %v, %v): error %q", ty, from, to, err)
				}
			}
		}
	}
	for _, tc := range []struct {
		t    Type
		from Sender
		to   Dest
		want string
	}{
		{TypeJoin, SenderProxy, DestSelf, "pias rules: join from proxy to self refused: it goes from target to anycast"},
		{TypeJoin, SenderClient, DestAnycast, "pias rules: join from client to anycast refused: it goes from target to anycast"},
		{TypeJoin, 0, DestAnycast, "pias rules: join from unknown to anycast refused: it goes from target to anycast"},
		{TypeLeave, SenderTarget, 0, "pias rules: leave from target to another address refused: it goes from target to self|self6|anycast"},
		{TypeJoinAck, SenderProxy, DestSelf, "pias rules: join-ack from proxy to self refused: it goes from proxy to edge"},
		{TypeProxiesReq, SenderProxy, DestSelf, "pias rules: proxies-req from proxy to self refused: it goes from target|client to self|self6"},
		{TypeProbe, SenderProxy, DestSelf6, "pias rules: probe from proxy to self6 refused: it goes from proxy to self"},
		{TypeProbe, SenderProxy | SenderTarget, DestSelf, "pias rules: probe from proxy|target to self refused: it goes from proxy to self"},
		{TypeRegister, SenderProxy, DestSelf | DestAnycast, "pias rules: register from proxy to self|anycast refused: it goes from proxy to self"},
		{0, SenderProxy, DestSelf, "pias rules: unknown type(0)"},
		{typeEnd, SenderProxy, DestSelf, "pias rules: unknown type(29)"},
	} {
		if err := Permit(tc.t, tc.from, tc.to); err == nil || err.Error() != tc.want {
			t.Errorf("Permit(%v, %v, %v) = %v, want %q", tc.t, tc.from, tc.to, err, tc.want)
		}
	}
	relayed := []Type{TypeResolve, TypeResolveReply, TypeProbeAck, TypeFail, TypeAlive, TypeMember, TypeRevocation, TypeNews}
	for ty := TypeJoin; ty < typeEnd; ty++ {
		want := false
		for _, r := range relayed {
			want = want || r == ty
		}
		if rules[ty].Relay != want {
			t.Errorf("%v: Relay %v, want %v", ty, rules[ty].Relay, want)
		}
	}
}

func TestSenderDestStrings(t *testing.T) {
	for s, want := range map[Sender]string{0: "unknown", SenderProxy: "proxy", SenderTarget: "target", SenderClient: "client",
		SenderTarget | SenderClient: "target|client", 0x80 | SenderProxy: "proxy|0x80"} {
		if got := s.String(); got != want {
			t.Errorf("Sender(%#x).String() = %q, want %q", uint8(s), got, want)
		}
	}
	for d, want := range map[Dest]string{0: "another address", DestSelf: "self", DestSelf6: "self6", DestAnycast: "anycast", DestEdge: "edge",
		DestSelf | DestSelf6 | DestAnycast: "self|self6|anycast", 0x30: "0x30"} {
		if got := d.String(); got != want {
			t.Errorf("Dest(%#x).String() = %q, want %q", uint8(d), got, want)
		}
	}
}
