package certs

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics: two counters fed by certmagic events and a collector that reads the
// certificates in memory (certmagic's cache or the local CA's leaves) at scrape time.
type metrics struct {
	reg      prometheus.Registerer
	obtained prometheus.Counter
	failures prometheus.Counter
	coll     *certCollector
}

type certCollector struct {
	m       *Manager
	managed *prometheus.Desc
	expiry  *prometheus.Desc
}

func newMetrics(m *Manager, reg prometheus.Registerer) (*metrics, error) {
	mt := &metrics{
		reg: reg,
		obtained: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_acme_obtained_total",
			Help: "Certificates obtained or renewed from the ACME CA.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_acme_failures_total",
			Help: "Failed attempts to obtain or renew a certificate from the ACME CA.",
		}),
		coll: &certCollector{
			m: m,
			managed: prometheus.NewDesc("meridian_tls_certificates_managed",
				"Host names with a certificate currently held in memory.", nil, nil),
			expiry: prometheus.NewDesc("meridian_tls_certificate_expiry_days",
				"Days until the certificate held for a name expires (negative once expired).", []string{"name"}, nil),
		},
	}
	var done []prometheus.Collector
	for _, c := range []prometheus.Collector{mt.obtained, mt.failures, mt.coll} {
		if err := reg.Register(c); err != nil {
			for _, d := range done {
				reg.Unregister(d)
			}
			return nil, err
		}
		done = append(done, c)
	}
	return mt, nil
}

func (mt *metrics) unregister() {
	mt.reg.Unregister(mt.obtained)
	mt.reg.Unregister(mt.failures)
	mt.reg.Unregister(mt.coll)
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.managed
	ch <- c.expiry
}

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	exp := c.m.certExpiries()
	now := c.m.now()
	ch <- prometheus.MustNewConstMetric(c.managed, prometheus.GaugeValue, float64(len(exp)))
	for name, t := range exp {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, t.Sub(now).Hours()/24, name)
	}
}
