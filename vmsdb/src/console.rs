//! `GET /`: the live console, one self-contained HTML page (maud; inline CSS and JavaScript, no
//! external assets) that polls `GET /v1/stats` once a second and shows throughput, latency
//! percentiles, aborts by reason, conflicts, epoch size and phase times, queue depths and the
//! recovery report. The page itself holds no data, so it needs no token; with a token
//! configured it takes one from `?token=` or its form, keeps it in the tab's `sessionStorage`
//! and sends it as `Authorization: Bearer` with every poll.

use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The page's styles.
const STYLE: &str = r#"
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1b1f24; background: #f7f8fa; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1em; margin: 0 0 .5em; color: #455; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(270px, 1fr)); gap: 12px; }
.card { background: #fff; border: 1px solid #dde1e6; border-radius: 6px; padding: 10px 14px; }
.big { font-size: 2em; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; } td, th { padding: 2px 4px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
#status { color: #666; } #status.error { color: #b00020; }
svg { width: 100%; height: 60px; } polyline { fill: none; stroke: #1f6fd1; stroke-width: 1.5; }
"#;

/// The polling script. It writes data only through `textContent`, so nothing the server
/// returns is interpreted as markup.
const SCRIPT: &str = r#"
(function () {
  const params = new URLSearchParams(location.search);
  if (params.get('token')) { sessionStorage.setItem('vmsdb_token', params.get('token')); }
  const form = document.getElementById('token-form');
  form.addEventListener('submit', function (e) {
    e.preventDefault();
    sessionStorage.setItem('vmsdb_token', document.getElementById('token').value);
    poll();
  });
  const set = (id, v) => { const el = document.getElementById(id); if (el) el.textContent = v; };
  const num = (v, digits) => (v === null || v === undefined) ? '–'
    : Number(v).toLocaleString('en-US', { maximumFractionDigits: digits || 0 });
  const ms = (us) => num(us / 1000, 2) + ' ms';
  let polls = 0;
  function rows(id, items, cells) {
    const body = document.getElementById(id);
    body.replaceChildren();
    for (const item of items) {
      const tr = document.createElement('tr');
      for (const [text, numeric] of cells(item)) {
        const td = document.createElement('td');
        td.textContent = text; if (numeric) td.className = 'n';
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
  }
  function chart(history) {
    const values = history.map(h => h.committed_per_s);
    const max = Math.max(1, ...values);
    const points = values.map((v, i) => (i * 100 / Math.max(1, values.length - 1)).toFixed(1)
      + ',' + (58 - v * 56 / max).toFixed(1));
    document.getElementById('chart-line').setAttribute('points', points.join(' '));
    set('chart-max', num(max) + ' txn/s');
  }
  function show(s) {
    polls += 1;
    document.body.dataset.polls = polls;
    set('app', s.app || '–'); set('phase', s.phase); set('uptime', num(s.uptime_s, 0) + ' s');
    const last = s.history.length ? s.history[s.history.length - 1] : null;
    set('throughput', last ? num(last.committed_per_s) : '–');
    set('aborted-rate', last ? num(last.aborted_per_s) : '–');
    set('conflict-rate', last ? num(last.conflicts_per_s) : '–');
    chart(s.history);
    const l = s.latency;
    set('lat-count', num(l.count)); set('p50', ms(l.p50_us)); set('p90', ms(l.p90_us));
    set('p99', ms(l.p99_us)); set('p999', ms(l.p999_us)); set('pmax', ms(l.max_us));
    const r = s.runtime;
    if (r) {
      set('committed', num(r.committed)); set('user-aborted', num(r.user_aborted));
      set('conflicts', num(r.conflicts)); set('fallback', num(r.fallback));
      set('hinted', num(r.serial_hinted)); set('epochs', num(r.epochs));
      set('epoch-txns', num(r.mean_epoch_txns, 1));
      const p = r.phase_us_per_epoch;
      set('ph-execute', num(p.execute, 1)); set('ph-decide', num(p.decide, 1));
      set('ph-commit', num(p.commit, 1)); set('ph-serial', num(p.serial_pass, 1));
      set('ph-log', num(p.log_append, 1));
      set('log-appends', num(r.log_appends)); set('checkpoints', num(r.checkpoints_completed));
    }
    set('in-flight', num(s.queues.in_flight)); set('pending', num(s.queues.pending_submissions));
    set('status-entries', num(s.queues.status_table_entries));
    rows('aborts', s.aborts, a => [[a.service, false], [a.kind, false], [num(a.count), true]]);
    set('aborts-empty', s.aborts.length ? '' : 'no aborts yet');
    rows('conflict-tables', s.conflicts_by_table, t => [[t.table, false], [num(t.losers), true],
      [t.hot_keys.map(k => k.key + ' (' + num(k.losers) + ')').join(', '), false]]);
    set('conflict-tables-empty', s.conflicts_by_table.length ? '' : 'no conflict losses yet');
    const rec = s.recovery;
    if (rec) {
      set('rec-checkpoint', rec.checkpoint_epoch === null ? 'none' : num(rec.checkpoint_epoch));
      set('rec-rows', num(rec.rows_loaded)); set('rec-epochs', num(rec.epochs_replayed));
      set('rec-seconds', num(rec.seconds, 3) + ' s'); set('rec-dedup', num(rec.dedup_window_entries));
    }
    const status = document.getElementById('status');
    status.className = ''; status.textContent = 'updated ' + new Date().toLocaleTimeString();
  }
  function fail(text) {
    const status = document.getElementById('status');
    status.className = 'error'; status.textContent = text;
  }
  function poll() {
    const token = sessionStorage.getItem('vmsdb_token');
    const headers = token ? { 'Authorization': 'Bearer ' + token } : {};
    fetch('/v1/stats', { headers: headers, cache: 'no-store' })
      .then(r => r.ok ? r.json() : r.json().then(e => { throw new Error(r.status + ' ' + e.code + ': ' + e.message); }))
      .then(show)
      .catch(e => fail(String(e.message || e)));
  }
  poll();
  setInterval(poll, 1000);
})();
"#;

/// One labelled number whose value the script fills in.
fn stat(label: &str, id: &str) -> Markup {
    html! { tr { td { (label) } td.n id=(id) { "–" } } }
}

/// The whole page.
pub fn page() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "vmsdb console" }
                style { (PreEscaped(STYLE)) }
            }
            body data-polls="0" {
                h1 { "vmsdb " span #app { "–" } }
                p {
                    "phase " b #phase { "–" } ", up " span #uptime { "–" } " · " span #status { "loading…" }
                }
                form #token-form {
                    label { "Token " input #token type="password" autocomplete="off"; }
                    " " button type="submit" { "use" }
                    " (or open this page as /?token=…; kept in this tab only)"
                }
                div.grid { (throughput_card()) (latency_card()) (aborts_card()) (epoch_card()) (queues_card()) (recovery_card()) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

fn throughput_card() -> Markup {
    html! {
        div.card {
            h2 { "Throughput (last second)" }
            div { span.big #throughput { "–" } " committed/s" }
            svg viewBox="0 0 100 60" preserveAspectRatio="none" { polyline #chart-line points="" {} }
            div { "peak " span #chart-max { "–" } " over the last two minutes" }
            table { (stat("aborted/s", "aborted-rate")) (stat("conflict losses/s", "conflict-rate")) }
        }
    }
}

fn latency_card() -> Markup {
    html! {
        div.card {
            h2 { "Latency, submit → durable outcome" }
            table {
                (stat("p50", "p50")) (stat("p90", "p90")) (stat("p99", "p99"))
                (stat("p99.9", "p999")) (stat("max", "pmax")) (stat("outcomes in window", "lat-count"))
            }
        }
    }
}

fn aborts_card() -> Markup {
    html! {
        div.card {
            h2 { "Aborts by reason" }
            table { thead { tr { th { "service" } th { "kind" } th { "count" } } } tbody #aborts {} }
            p #aborts-empty {}
            h2 { "Conflicts" }
            table {
                (stat("conflict losses", "conflicts")) (stat("serial fallback runs", "fallback"))
                (stat("serial hints", "hinted"))
            }
            table { thead { tr { th { "table" } th { "losses" } th { "hottest keys" } } } tbody #conflict-tables {} }
            p #conflict-tables-empty {}
        }
    }
}

fn epoch_card() -> Markup {
    html! {
        div.card {
            h2 { "Epochs" }
            table {
                (stat("epochs", "epochs")) (stat("transactions per epoch", "epoch-txns"))
                (stat("committed", "committed")) (stat("aborted by handlers", "user-aborted"))
                (stat("execute µs/epoch", "ph-execute")) (stat("decide µs/epoch", "ph-decide"))
                (stat("commit µs/epoch", "ph-commit")) (stat("serial pass µs/epoch", "ph-serial"))
                (stat("log write µs/append", "ph-log")) (stat("log appends", "log-appends"))
                (stat("checkpoints", "checkpoints"))
            }
        }
    }
}

fn queues_card() -> Markup {
    html! {
        div.card {
            h2 { "Queues" }
            table {
                (stat("submissions in flight", "in-flight"))
                (stat("fire-and-forget pending", "pending"))
                (stat("status table entries", "status-entries"))
            }
        }
    }
}

fn recovery_card() -> Markup {
    html! {
        div.card {
            h2 { "Recovery at start-up" }
            table {
                (stat("checkpoint epoch", "rec-checkpoint")) (stat("rows loaded", "rec-rows"))
                (stat("epochs replayed", "rec-epochs")) (stat("duration", "rec-seconds"))
                (stat("dedup window entries", "rec-dedup"))
            }
        }
    }
}
