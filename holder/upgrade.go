package holder

import (
	"time"

	"github.com/sockhold/sockhold/holder/link"
)

// upgradeRun is one upgrade in progress.
type upgradeRun struct {
	seq     int
	start   time.Time
	fromGen int
	waiters []*controlRequest // `sockhold upgrade --wait` callers
	detail  string            // the new worker's own reason, if it gave one
}

// requestUpgrade starts an upgrade: the serving worker is asked to start the
// binary now on disk through tableflip. req is nil for SIGHUP. Requests are
// serialised: a SIGHUP during an upgrade is queued (one is enough: the next
// upgrade picks up whatever is on disk then); a control request is answered
// "in progress" so that a deploy script learns it at once.
func (h *Holder) requestUpgrade(req *controlRequest) {
	switch {
	case h.stopping:
		req.fail("sockhold is stopping")
		return
	case h.upgrade != nil || h.current == nil || !h.current.serving || h.current.link < 0:
		if req == nil {
			h.upgradeQueued = true
			h.log.Info("upgrade requested while another is under way or no worker serves yet; queued")
			return
		}
		if h.upgrade != nil {
			req.fail("upgrade already in progress")
		} else {
			req.fail("no worker is serving yet")
		}
		return
	}
	h.upgradeSeq++
	u := &upgradeRun{seq: h.upgradeSeq, start: time.Now(), fromGen: h.current.gen}
	if req != nil {
		if req.Wait {
			u.waiters = append(u.waiters, req)
		} else {
			req.reply(controlReply{OK: true, Message: "upgrade started"})
		}
	}
	h.upgrade = u
	h.log.Info("upgrade started", "from_gen", u.fromGen, "worker", h.current.pid)
	h.notify.reloading()
	if err := link.Send(h.current.link, link.Msg{Type: link.Upgrade}); err != nil {
		h.finishUpgrade(false, "cannot reach the worker: "+err.Error())
		return
	}
	// tableflip kills a new worker that is not ready in time; this is the
	// holder's own bound in case the old worker never answers at all.
	h.after(h.cfg.UpgradeTimeout+10*time.Second, event{kind: evUpgradeTimeout, seq: u.seq})
}

// finishUpgrade ends the upgrade in progress and answers everyone waiting.
func (h *Holder) finishUpgrade(ok bool, reason string) {
	u := h.upgrade
	if u == nil {
		return
	}
	h.upgrade = nil
	if !ok && u.detail != "" {
		reason = u.detail + " (" + reason + ")"
	}
	took := time.Since(u.start)
	rep := controlReply{OK: ok, Error: reason, TookMS: float64(took.Microseconds()) / 1000}
	if ok {
		h.totals.upgradesOK++
		rep.Generation, rep.Version = h.current.gen, h.current.version
		rep.Message = "upgraded"
		h.log.Info("upgrade done", "gen", h.current.gen, "version", h.current.version, "took", took.String())
	} else {
		h.totals.upgradesFailed++
		h.log.Warn("upgrade failed; the previous generation keeps serving", "reason", reason, "took", took.String())
	}
	h.notify.ready(h.statusLine())
	for _, w := range u.waiters {
		w.reply(rep)
	}
	if h.upgradeQueued && h.current != nil && h.current.serving {
		h.upgradeQueued = false
		h.requestUpgrade(nil)
	}
}

func (h *Holder) addTotals(st *link.Stats) {
	if st == nil {
		return
	}
	h.totals.accepted += st.Accepted
	h.totals.rejected += st.Rejected
	h.totals.spawnFailures += st.SpawnFailures
}
