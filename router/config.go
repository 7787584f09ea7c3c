package router

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Defaults of the Config fields left zero.
const (
	DefaultMTU         = 1420 // wireguard-go's default tunnel MTU
	DefaultMaxFlows    = 65536
	DefaultQueueLimit  = 16
	DefaultNegativeTTL = time.Second
	// A client resolves up to 64 new groups at once, and the queues hold
	// at most 8 MiB: 4096 full groups' worth would be ~90 MiB at the MTU.
	DefaultMaxResolves          = 4096
	DefaultMaxResolvesPerSource = 64
	DefaultMaxQueuedBytes       = 8 << 20
)

// prefix4 and prefix6 are anycast prefixes as masks over the numbers the
// data path compares.
type prefix4 struct{ net, mask uint32 }

type prefix6 struct{ hi, lo, mhi, mlo uint64 }

// New checks cfg, fills in its defaults and returns a router. Until
// SetProxies is called it knows no proxy: it accepts no encapsulated packet
// and sends new flows to no other JAP.
func New(cfg Config) (*Router, error) {
	r := &Router{
		targets:  make(map[Group]*targetSet),
		policies: make(map[Group]Policy),
		byAddr:   make(map[netip.Addr]int),
		cache:    make(map[Group]*cacheEntry),
		queues:   make(map[Group]*pending),
		bySrc:    make(map[netip.Addr]int),
		rnd:      cfg.Rand,
	}
	if cfg.ControlPort == 0 {
		return nil, errors.New("router: the control port is not set")
	}
	r.ctrlPort = cfg.ControlPort
	if len(cfg.Anycast) == 0 {
		return nil, errors.New("router: no anycast prefix is set")
	}
	for _, p := range cfg.Anycast {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return nil, fmt.Errorf("router: anycast prefix %v is not valid", p)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p.Addr())).Masked()
		if !p.IsValid() {
			return nil, fmt.Errorf("router: anycast prefix %v is not valid", p)
		}
		if p.Addr().Is4() {
			b := p.Addr().As4()
			r.any4 = append(r.any4, prefix4{net: binary.BigEndian.Uint32(b[:]), mask: ^uint32(0) << (32 - p.Bits())})
		} else {
			b := p.Addr().As16()
			m := prefixMask6(p.Bits())
			r.any6 = append(r.any6, prefix6{
				hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:]),
				mhi: binary.BigEndian.Uint64(m[:8]), mlo: binary.BigEndian.Uint64(m[8:]),
			})
		}
	}
	for _, a := range cfg.Self {
		a = a.Unmap()
		if !a.IsValid() || a.Zone() != "" || a.IsUnspecified() {
			return nil, fmt.Errorf("router: overlay address %v is not valid", a)
		}
		k := key16(a)
		if r.isAnycast(&k, famOf(a)) {
			return nil, fmt.Errorf("router: overlay address %v is inside an anycast prefix", a)
		}
		if a.Is4() {
			b := a.As4()
			r.selfV4 = append(r.selfV4, binary.BigEndian.Uint32(b[:]))
		} else {
			r.selfV6 = append(r.selfV6, k)
		}
	}
	if len(r.selfV4) == 0 {
		return nil, errors.New("router: this proxy has no IPv4 overlay address")
	}
	r.self4 = r.selfV4[0]
	r.encSum4 = encapSum(r.self4, ProtoIPIP)
	r.encSum6 = encapSum(r.self4, ProtoIPv6)

	if cfg.MTU == 0 {
		cfg.MTU = DefaultMTU
	}
	if cfg.MTU < 576 || cfg.MTU > 65535 {
		return nil, fmt.Errorf("router: MTU %d is not between 576 and 65535", cfg.MTU)
	}
	r.mss4 = uint16(cfg.MTU - EncapOverhead - 40)
	r.mss6 = uint16(cfg.MTU - EncapOverhead - 60)

	if cfg.MaxFlows == 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.QueueLimit == 0 {
		cfg.QueueLimit = DefaultQueueLimit
	}
	if cfg.NegativeTTL == 0 {
		cfg.NegativeTTL = DefaultNegativeTTL
	}
	if cfg.MaxResolves == 0 {
		cfg.MaxResolves = DefaultMaxResolves
	}
	if cfg.MaxResolvesPerSource == 0 {
		cfg.MaxResolvesPerSource = DefaultMaxResolvesPerSource
	}
	if cfg.MaxQueuedBytes == 0 {
		cfg.MaxQueuedBytes = DefaultMaxQueuedBytes
	}
	if cfg.MaxFlows < 0 || cfg.QueueLimit < 0 || cfg.NegativeTTL < 0 {
		return nil, errors.New("router: MaxFlows, QueueLimit and NegativeTTL must not be negative")
	}
	if cfg.MaxResolves < 0 || cfg.MaxResolvesPerSource < 0 || cfg.MaxQueuedBytes < 0 {
		return nil, errors.New("router: MaxResolves, MaxResolvesPerSource and MaxQueuedBytes must not be negative")
	}
	r.queueLimit = cfg.QueueLimit
	r.maxRes, r.maxResSrc, r.maxQBytes = cfg.MaxResolves, cfg.MaxResolvesPerSource, cfg.MaxQueuedBytes
	r.negTTL = cfg.NegativeTTL

	t, d := cfg.Timeouts, DefaultTimeouts
	for _, f := range []struct{ v, def *time.Duration }{
		{&t.TCPSyn, &d.TCPSyn}, {&t.TCPEstablished, &d.TCPEstablished},
		{&t.TCPClosing, &d.TCPClosing}, {&t.UDP, &d.UDP}, {&t.ICMP, &d.ICMP},
	} {
		if *f.v < 0 {
			return nil, errors.New("router: timeouts must not be negative")
		}
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	r.to = timeouts{syn: int64(t.TCPSyn), est: int64(t.TCPEstablished), closing: int64(t.TCPClosing),
		udp: int64(t.UDP), icmp: int64(t.ICMP)}

	r.iap = newTable(cfg.MaxFlows, false)
	r.jap = newTable(cfg.MaxFlows, true)
	r.proxies.Store(&proxySet{})
	return r, nil
}

// unmapBits is how many prefix bits a v4-mapped address spends on the
// mapping.
func unmapBits(a netip.Addr) int {
	if a.Is4In6() {
		return 96
	}
	return 0
}

func prefixMask6(bits int) (m [16]byte) {
	for i := range m {
		switch {
		case bits >= 8:
			m[i] = 0xff
			bits -= 8
		case bits > 0:
			m[i] = ^byte(0xff >> bits)
			bits = 0
		}
	}
	return m
}
