// meshca console: every page is a shell; this script signs in, then reads and acts through the
// admin API with the tab's token as a bearer token. No framework, no build step, no inline
// script (the Content-Security-Policy forbids it). The token lives in sessionStorage only: never
// in a URL, a cookie or a log.
"use strict";

const TOKEN_KEY = "meshca.token";
const MODE_KEY = "meshca.mode"; // "token" or "mtls"
const ROLES = { viewer: 1, operator: 2, admin: 3 };
const SVG = "http://www.w3.org/2000/svg";

// ---- small DOM helpers ------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function facts(target, pairs) {
  target.replaceChildren();
  for (const [term, value] of pairs) {
    target.append(el("dt", { text: term }), el("dd", { text: value === null || value === undefined ? "—" : String(value) }));
  }
}

function when(text) {
  if (!text) return "—";
  const date = new Date(text);
  return date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// ---- talking to the API -----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

// A problem+json answer becomes one readable sentence (and its field errors).
async function readProblem(response) {
  let text = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    text = `${body.title || response.status}: ${body.detail || ""}`.trim();
    if (Array.isArray(body.errors) && body.errors.length) {
      text += " — " + body.errors.map((e) => `${e.field}: ${e.message}`).join("; ");
    }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(response.status, text);
}

async function api(method, path, body) {
  const headers = { Accept: "application/json", ...authHeaders() };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await readProblem(response);
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

function notify(message, kind) {
  const box = $("#notice");
  box.textContent = message;
  box.className = "notice " + (kind || "error");
  box.hidden = false;
}

function clearNotice() {
  $("#notice").hidden = true;
}

// Runs an action; shows its error readably instead of throwing. A notice stays until the next
// one replaces it, so a page reload after an action does not wipe out what the action said.
async function guarded(action) {
  try {
    return await action();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) signOut("Your session is no longer valid: " + error.message);
    else notify(error.message || String(error));
    return undefined;
  }
}

// ---- confirmation dialog ----------------------------------------------------------------

function confirmAction(title, consequence, withReason) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = consequence;
  $("#confirm-reason-row").hidden = !withReason;
  $("#confirm-reason").value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "yes" ? { reason: $("#confirm-reason").value } : null);
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    (withReason ? $("#confirm-reason") : $("#confirm-no")).focus();
  });
}

// ---- session ----------------------------------------------------------------------------

let principal = null;

function allowed(minimum) {
  return principal !== null && ROLES[principal.role] >= ROLES[minimum];
}

// Controls the role may not use are removed, not just hidden.
function applyRole(root) {
  for (const node of (root || document).querySelectorAll("[data-min-role]")) {
    if (!allowed(node.dataset.minRole)) node.remove();
  }
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(MODE_KEY);
  principal = null;
  if (message) sessionStorage.setItem("meshca.farewell", message);
  window.location.replace(window.location.pathname);
}

async function signIn() {
  const mode = sessionStorage.getItem(MODE_KEY);
  try {
    principal = await api("GET", "/ui/api/whoami");
  } catch (error) {
    principal = null;
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(MODE_KEY);
    $("#signin").hidden = false;
    $("#content").hidden = true;
    notify((mode === "mtls" ? "No client certificate with a role — " : "Sign-in refused — ") + error.message);
    return false;
  }
  clearNotice();
  $("#who").textContent = `${principal.actor} (${principal.role})`;
  $("#sign-out").hidden = false;
  $("#signin").hidden = true;
  $("#content").hidden = false;
  applyRole();
  return true;
}

function setUpSession() {
  const farewell = sessionStorage.getItem("meshca.farewell");
  if (farewell) {
    sessionStorage.removeItem("meshca.farewell");
    notify(farewell);
  }
  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = $("#token");
    sessionStorage.setItem(TOKEN_KEY, field.value.trim());
    sessionStorage.setItem(MODE_KEY, "token");
    field.value = "";
    if (await signIn()) startPage();
  });
  $("#signin-mtls").addEventListener("click", async () => {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.setItem(MODE_KEY, "mtls");
    if (await signIn()) startPage();
  });
  $("#sign-out").addEventListener("click", () => signOut("Signed out."));
}

// ---- pages ------------------------------------------------------------------------------

const PAGES = {
  overview: initOverview,
  ca: initCa,
  certificates: initCertificates,
  identities: initIdentities,
  policies: initPolicies,
  audit: initAudit,
  issuance: initIssuance,
};

function startPage() {
  const init = PAGES[document.body.dataset.page];
  if (init) init();
}

async function initOverview() {
  const ca = await guarded(() => api("GET", "/v1/ca"));
  if (!ca) return;
  const signing = ca.generations.find((g) => g.signing && g.kind === "intermediate");
  const roots = ca.generations.filter((g) => g.kind === "root" && g.in_bundle);
  facts($("#overview"), [
    ["Signed in as", `${principal.actor} (${principal.role})`],
    ["CA mode", ca.mode],
    ["Signing intermediate", signing ? `#${signing.id}, expires ${when(signing.not_after)}` : "none"],
    ["Roots in the bundle", roots.map((r) => `#${r.id}`).join(", ") || "none"],
    ["Bundle sequence", ca.bundle_sequence],
    ["Next rotation check", when(ca.rotation.next_check)],
    ["Rotation error", ca.rotation.last_error || "none"],
  ]);
}

// -- CA --

async function initCa() {
  await loadCa();
  const kind = () => $("#ca-kind").value;
  const prepare = $("#ca-prepare");
  if (prepare) {
    prepare.addEventListener("click", async () => {
      const consequence = kind() === "intermediate"
        ? "A new intermediate is created under the active root. It signs nothing until it is activated."
        : `A new ${kind()} is created and published in the trust bundle at once; it signs only once activated, after the publish lead.`;
      if (!await confirmAction(`Prepare a new ${kind()}?`, consequence, false)) return;
      const change = await guarded(() => api("POST", "/v1/ca:prepare", { kind: kind() }));
      if (change) notify(`Prepared: ${describe(change)}.`, "ok");
      await loadCa();
    });
    $("#ca-activate").addEventListener("click", async () => {
      const consequence = `The oldest prepared ${kind()} starts signing now; the active one retires. `
        + ($("#ca-waive").checked ? "The publish lead is waived: peers that have not refreshed their bundle will reject what it signs." : "");
      if (!await confirmAction(`Activate the prepared ${kind()}?`, consequence, false)) return;
      const change = await guarded(() => api("POST", "/v1/ca:activate", { kind: kind(), waive_publish_lead: $("#ca-waive").checked }));
      if (change) notify(`Activated: ${describe(change)}.`, "ok");
      await loadCa();
    });
  }
}

function describe(change) {
  return change.actions.map((a) => `${a.action} ${a.kind} #${a.generation_id ?? "?"}${a.retires ? ` (retires #${a.retires})` : ""}`).join(", ") || "nothing to do";
}

async function loadCa() {
  const ca = await guarded(() => api("GET", "/v1/ca"));
  if (!ca) return;
  const r = ca.rotation;
  facts($("#ca-summary"), [
    ["Mode", ca.mode],
    ["Bundle sequence", ca.bundle_sequence],
    ["Automatic rotation", r.automatic ? "yes" : "no"],
    ["Prepare at", r.prepare_at !== null ? `${Math.round(r.prepare_at * 100)}% of a generation's life` : "—"],
    ["Activate at", r.activate_at !== null ? `${Math.round(r.activate_at * 100)}% of a generation's life` : "—"],
    ["Publish lead", r.publish_lead_seconds !== null ? `${Math.round(r.publish_lead_seconds / 3600)} h` : "—"],
    ["Next rotation check", when(r.next_check)],
    ["Last rotation error", r.last_error || "none"],
  ]);
  drawTimeline($("#ca-timeline"), ca);
  const body = $("#ca-table tbody");
  body.replaceChildren();
  for (const g of ca.generations) {
    const row = el("tr", { "data-generation": g.id, "data-state": g.state },
      el("td", { text: g.id }), el("td", { text: g.kind }), el("td", { text: g.state }),
      el("td", { text: g.signing ? "signs" : "" }), el("td", { text: g.in_bundle ? "yes" : "" }),
      el("td", { class: "wrap", text: g.subject }), el("td", { text: when(g.not_after) }),
      el("td", { class: "wrap", text: `${g.key_type} (${g.key_location})` }));
    if (allowed("operator")) {
      const cell = el("td");
      if (g.state !== "tainted" && g.state !== "retired") {
        cell.append(el("button", {
          type: "button", class: "danger", text: "Taint", "aria-label": `Taint generation ${g.id} (${g.kind})`,
          onclick: () => taint(g),
        }));
      }
      row.append(cell);
    }
    body.append(row);
  }
}

async function taint(g) {
  const consequence = g.kind === "root"
    ? `Root #${g.id} leaves the trust bundle, nothing signs under it again, a replacement is rotated in at once, and every certificate under it must renew.`
    : `Nothing signs under ${g.kind} #${g.id} again, a replacement is rotated in at once, and every certificate it signed must renew.`;
  const answer = await confirmAction(`Taint generation #${g.id}?`, consequence, true);
  if (!answer) return;
  const change = await guarded(() => api("POST", `/v1/ca/generations/${g.id}:taint`, { reason: answer.reason }));
  if (change) notify(`Generation #${g.id} is tainted.`, "ok");
  await loadCa();
}

// Validity bars on a shared time axis, with now, the thresholds and a root's publish lead.
function drawTimeline(target, ca) {
  target.replaceChildren();
  const gens = ca.generations;
  if (!gens.length) {
    target.append(el("p", { text: "No generation yet." }));
    return;
  }
  const now = Date.now();
  const start = Math.min(now, ...gens.map((g) => Date.parse(g.not_before)));
  // A root lives for years and an intermediate for days: drawn to the root's end, the
  // intermediates would be slivers. The axis ends a little after the last short-lived
  // generation, and a longer bar runs off the edge with its end date written on it.
  const shortEnds = gens.filter((g) => g.kind !== "root").map((g) => Date.parse(g.not_after));
  const longest = Math.max(now, ...gens.map((g) => Date.parse(g.not_after)));
  const horizon = shortEnds.length ? Math.max(now, ...shortEnds) : longest;
  const end = Math.min(longest, horizon + (horizon - start) * 0.3);
  const width = 900, left = 150, right = 20, rowH = 26, top = 24;
  const height = top + gens.length * rowH + 24;
  const x = (t) => left + ((t - start) / Math.max(1, end - start)) * (width - left - right);
  const picture = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "timeline-svg",
    "aria-label": `Validity of ${gens.length} CA generations from ${when(new Date(start).toISOString())} to ${when(new Date(end).toISOString())}` });
  picture.append(svg("title", {}, "CA generations over time"));
  const pattern = svg("pattern", { id: "lead", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" });
  pattern.append(svg("rect", { width: 3, height: 6, class: "lead-stripe" }));
  const defs = svg("defs");
  defs.append(pattern);
  picture.append(defs);
  gens.forEach((g, i) => {
    const y = top + i * rowH;
    const from = Date.parse(g.not_before), to = Date.parse(g.not_after);
    picture.append(svg("text", { x: 4, y: y + 16, class: "label" }, `#${g.id} ${g.kind}${g.signing ? " ✓" : ""}`));
    const clipped = to > end;
    const bar = svg("rect", { x: x(from), y: y + 4, width: Math.max(2, x(Math.min(to, end)) - x(from)), height: rowH - 8, rx: 3,
      class: `bar state-${g.state}${g.signing ? " signing" : ""}`, "data-generation": g.id });
    bar.append(svg("title", {}, `#${g.id} ${g.kind}, ${g.state}${g.signing ? ", signing" : ""}: ${when(g.not_before)} → ${when(g.not_after)}`));
    picture.append(bar);
    if (clipped) picture.append(svg("text", { x: width - right - 4, y: y + 16, class: "axis end on-bar" }, `→ ${when(g.not_after)}`));
    const lead = ca.rotation.publish_lead_seconds;
    if (lead && (g.kind === "root" || g.kind === "jwt")) {
      picture.append(svg("rect", { x: x(from), y: y + 4, width: Math.max(1, x(Math.min(to, from + lead * 1000)) - x(from)), height: rowH - 8, fill: "url(#lead)", class: "lead" }));
    }
    for (const [fraction, mark] of [[ca.rotation.prepare_at, "P"], [ca.rotation.activate_at, "A"]]) {
      if (fraction === null || fraction === undefined) continue;
      const at = from + (to - from) * fraction;
      if (at > end) continue;
      const t = x(at);
      picture.append(svg("line", { x1: t, x2: t, y1: y + 2, y2: y + rowH - 2, class: "threshold" }));
      picture.append(svg("text", { x: t + 2, y: y + 12, class: "mark" }, mark));
    }
  });
  const nx = x(now);
  picture.append(svg("line", { x1: nx, x2: nx, y1: top - 8, y2: height - 18, class: "now" }));
  picture.append(svg("text", { x: nx + 3, y: top - 10, class: "now-label" }, "now"));
  picture.append(svg("text", { x: left, y: height - 4, class: "axis" }, when(new Date(start).toISOString())));
  picture.append(svg("text", { x: width - right, y: height - 4, class: "axis end" }, when(new Date(end).toISOString())));
  target.append(picture);
}

// -- certificates --

let certCursor = null;

function certQuery() {
  const form = new FormData($("#cert-search"));
  const params = new URLSearchParams();
  for (const name of ["spiffe_id_prefix", "namespace", "service_account"]) {
    const value = String(form.get(name) || "").trim();
    if (value) params.set(name, value);
  }
  const status = form.get("status");
  if (status === "active") params.set("active", "true");
  if (status === "expiring") {
    params.set("active", "true");
    params.set("expiring_before", new Date(Date.now() + 24 * 3600 * 1000).toISOString());
  }
  params.set("limit", "20");
  return params;
}

async function loadCertificates(more) {
  const params = certQuery();
  if (more && certCursor) params.set("cursor", certCursor);
  const page = await guarded(() => api("GET", "/v1/certificates?" + params));
  if (!page) return;
  const body = $("#cert-table tbody");
  if (!more) body.replaceChildren();
  for (const c of page.items) {
    body.append(el("tr", { "data-serial": c.serial },
      el("td", {}, el("code", { text: c.serial.slice(0, 16) + (c.serial.length > 16 ? "…" : "") })),
      el("td", { class: "wrap", text: c.spiffe_id }), el("td", { text: when(c.not_after) }),
      el("td", { text: `#${c.issuer_generation_id}` }),
      el("td", { text: c.revoked_at ? `revoked (${c.revocation_reason})` : (Date.parse(c.not_after) < Date.now() ? "expired" : "valid") }),
      el("td", {}, el("button", { type: "button", text: "Open", "aria-label": `Open certificate ${c.serial}`, onclick: () => openCertificate(c.serial) }))));
  }
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: 6, text: "No certificate matches." })));
  certCursor = page.next_cursor;
  $("#cert-more").hidden = !certCursor;
}

let openSerial = null;

async function openCertificate(serial) {
  const [c, ca] = await Promise.all([guarded(() => api("GET", `/v1/certificates/${serial}`)), guarded(() => api("GET", "/v1/ca"))]);
  if (!c) return;
  openSerial = serial;
  const chain = [];
  let issuer = ca ? ca.generations.find((g) => g.id === c.issuer_generation_id) : null;
  while (issuer) {
    chain.push(`#${issuer.id} ${issuer.kind} (${issuer.state})`);
    const parent = issuer.parent_id;
    issuer = parent ? ca.generations.find((g) => g.id === parent) : null;
  }
  facts($("#cert-facts"), [
    ["Serial", c.serial], ["SPIFFE ID", c.spiffe_id], ["Namespace", c.namespace],
    ["Service account", c.service_account], ["Pod", c.pod_name], ["Not before", when(c.not_before)],
    ["Not after", when(c.not_after)], ["Issued at", when(c.issued_at)], ["Key", c.key_type],
    ["SHA-256 fingerprint", c.fingerprint_sha256], ["Chain", ["leaf", ...chain].join(" → ")],
    ["Revoked", c.revoked_at ? `${when(c.revoked_at)} (${c.revocation_reason})` : "no"],
  ]);
  $("#cert-pem").textContent = c.certificate_pem;
  const link = $("#cert-download");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([c.certificate_pem], { type: "application/x-pem-file" }));
  link.download = `${c.serial}.pem`;
  const revoke = $("#cert-revoke");
  if (revoke) revoke.hidden = Boolean(c.revoked_at);
  $("#cert-detail").hidden = false;
  $("#cert-detail-title").focus();
  // The CRL that would list this certificate: its issuer's.
  const select = $("#crl-issuer");
  if ([...select.options].some((o) => o.value === String(c.issuer_generation_id))) {
    select.value = String(c.issuer_generation_id);
    await loadCrl();
  }
}

async function loadIssuers() {
  const ca = await guarded(() => api("GET", "/v1/ca"));
  if (!ca) return;
  const select = $("#crl-issuer");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "", text: "the signing intermediate" }));
  for (const g of ca.generations.filter((g) => g.kind === "intermediate")) {
    select.append(el("option", { value: g.id, text: `#${g.id} (${g.state}${g.signing ? ", signing" : ""})` }));
  }
  select.value = chosen;
}

async function loadCrl() {
  const issuer = $("#crl-issuer").value;
  const crl = await guarded(() => api("GET", "/ui/api/crl" + (issuer ? `?issuer=${encodeURIComponent(issuer)}` : "")));
  if (!crl) return;
  $("#crl-about").textContent = `Issuer ${crl.issuer}; this update ${when(crl.this_update)}, next ${when(crl.next_update)}; ${crl.entries.length} entr${crl.entries.length === 1 ? "y" : "ies"}.`;
  const body = $("#crl-table tbody");
  body.replaceChildren();
  for (const e of crl.entries) {
    body.append(el("tr", { "data-serial": e.serial }, el("td", {}, el("code", { text: e.serial })), el("td", { text: when(e.revoked_at) }), el("td", { text: e.reason || "—" })));
  }
}

function initCertificates() {
  $("#cert-detail-title").setAttribute("tabindex", "-1");
  $("#cert-search").addEventListener("submit", (event) => {
    event.preventDefault();
    loadCertificates(false);
  });
  $("#cert-more").addEventListener("click", () => loadCertificates(true));
  $("#crl-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadCrl();
  });
  const revoke = $("#cert-revoke");
  if (revoke) {
    revoke.addEventListener("submit", async (event) => {
      event.preventDefault();
      const serial = openSerial;
      const reason = $("#revoke-reason").value;
      const ok = await confirmAction("Revoke this certificate?", `Certificate ${serial} can no longer renew itself and is listed in its issuer's CRL (reason: ${reason}). This cannot be undone.`, false);
      if (!ok) return;
      const done = await guarded(() => api("POST", `/v1/certificates/${serial}:revoke`, { reason }));
      if (!done) return;
      notify(`Certificate ${serial} is revoked.`, "ok");
      await Promise.all([openCertificate(serial), loadCertificates(false), loadCrl()]);
    });
  }
  loadCertificates(false);
  loadIssuers().then(loadCrl);
}

// -- identities --

async function loadBlocked() {
  const rows = await guarded(() => api("GET", "/v1/identities:blocked"));
  if (!rows) return;
  const body = $("#blocked-table tbody");
  body.replaceChildren();
  for (const r of rows) {
    const row = el("tr", { "data-spiffe-id": r.spiffe_id }, el("td", { text: r.spiffe_id }), el("td", { text: r.reason || "—" }),
      el("td", { text: r.blocked_by }), el("td", { text: when(r.blocked_at) }));
    if (allowed("operator")) {
      row.append(el("td", {}, el("button", { type: "button", text: "Unblock", "aria-label": `Unblock ${r.spiffe_id}`, onclick: async () => {
        if (!await confirmAction(`Unblock ${r.spiffe_id}?`, "This identity can get certificates again at once.", false)) return;
        if (await guarded(() => api("POST", `/v1/identities/${encodeURIComponent(r.spiffe_id)}:unblock`))) notify(`${r.spiffe_id} is unblocked.`, "ok");
        await loadBlocked();
      } })));
    }
    body.append(row);
  }
  if (!rows.length) body.append(el("tr", {}, el("td", { colspan: 5, text: "No identity is blocked." })));
}

function initIdentities() {
  const form = $("#block-form");
  if (form) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const id = $("#block-id").value.trim();
      if (!await confirmAction(`Block ${id}?`, "This identity gets no new certificate until it is unblocked; the ones it holds stay valid until they expire or are revoked.", false)) return;
      const done = await guarded(() => api("POST", `/v1/identities/${encodeURIComponent(id)}:block`, { reason: $("#block-reason").value }));
      if (done) {
        notify(`${id} is blocked.`, "ok");
        form.reset();
      }
      await loadBlocked();
    });
  }
  loadBlocked();
}

// -- policies --

async function initPolicies() {
  const set = await guarded(() => api("GET", "/v1/authz/policies"));
  if (set) {
    $("#pol-version").textContent = `Policy set version ${set.version}; ${set.policies.length} polic${set.policies.length === 1 ? "y" : "ies"}.`;
    const body = $("#pol-table tbody");
    body.replaceChildren();
    for (const p of set.policies) {
      const action = (p.document && p.document.spec && p.document.spec.action) || "ALLOW";
      body.append(el("tr", {}, el("td", { text: p.namespace }), el("td", { text: p.name }), el("td", { text: action }), el("td", { text: p.source })));
    }
    if (!set.policies.length) body.append(el("tr", {}, el("td", { colspan: 4, text: "No policy is in force." })));
  }
  $("#try-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    let request, policies = null;
    try {
      request = JSON.parse($("#try-request").value);
      const text = $("#try-policies").value.trim();
      if (text) policies = JSON.parse(text);
    } catch (error) {
      notify("The request or the policies are not valid JSON: " + error.message);
      return;
    }
    const result = await guarded(() => policies === null
      ? api("POST", "/v1/authz:check?explain=true", request)
      : api("POST", "/v1/authz:evaluate?explain=true", { policies, request }));
    if (!result) return;
    facts($("#try-facts"), [
      ["Decision", result.decision], ["Deciding policy", result.policy], ["Rule", result.rule],
      ["Reason", result.reason], ["Against", policies === null ? "the policies in force" : "the policies given"],
    ]);
    const body = $("#try-explain tbody");
    body.replaceChildren();
    for (const step of result.explain || []) {
      body.append(el("tr", {}, el("td", { text: step.policy }), el("td", { text: step.action + (step.dry_run ? " (dry run)" : "") }),
        el("td", { text: step.applies ? "yes" : "no" }), el("td", { text: step.matched ? "yes" : "no" }),
        el("td", { text: step.rule ?? "—" }), el("td", { text: step.note || "" })));
    }
    if (!(result.explain || []).length) body.append(el("tr", {}, el("td", { colspan: 6, text: "No policy applies to this workload." })));
    $("#try-result").hidden = false;
  });
}

// -- audit --

let auditCursor = null;

async function loadAudit(more) {
  const form = new FormData($("#audit-filter"));
  const params = new URLSearchParams({ order: "newest", limit: "50" });
  for (const name of ["actor", "action", "target"]) {
    const value = String(form.get(name) || "").trim();
    if (value) params.set(name, value);
  }
  if (more && auditCursor) params.set("cursor", auditCursor);
  const page = await guarded(() => api("GET", "/v1/audit?" + params));
  if (!page) return;
  const body = $("#audit-table tbody");
  if (!more) body.replaceChildren();
  for (const e of page.items) {
    body.append(el("tr", { "data-action": e.action }, el("td", { text: e.id }), el("td", { text: when(e.at) }), el("td", { text: e.actor }),
      el("td", { text: e.action }), el("td", { text: e.target }), el("td", { text: e.outcome }), el("td", { text: e.detail || "" })));
  }
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: 7, text: "No entry matches." })));
  auditCursor = page.next_cursor;
  $("#audit-more").hidden = !auditCursor;
}

function initAudit() {
  $("#audit-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    loadAudit(false);
  });
  $("#audit-more").addEventListener("click", () => loadAudit(true));
  loadAudit(false);
}

// -- issuance --

const samples = [];

async function sampleIssuance() {
  const counts = await guarded(() => api("GET", "/ui/api/issuance"));
  if (!counts) return;
  const failed = Object.values(counts.failures).reduce((a, b) => a + b, 0);
  samples.push({ t: Date.now(), issued: counts.issued, failed, received: counts.received });
  while (samples.length > 61) samples.shift();
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = Math.max(0.001, (samples[i].t - samples[i - 1].t) / 1000);
    rates.push({ t: samples[i].t, issued: (samples[i].issued - samples[i - 1].issued) / dt, failed: (samples[i].failed - samples[i - 1].failed) / dt });
  }
  drawRates($("#iss-chart"), rates);
  const last = rates[rates.length - 1];
  facts($("#iss-facts"), [
    ["Requests received", counts.received], ["Certificates issued", counts.issued], ["Failed", failed],
    ["Issuances/s now", last ? last.issued.toFixed(2) : "…"], ["Failures/s now", last ? last.failed.toFixed(2) : "…"],
  ]);
  const body = $("#iss-failures tbody");
  body.replaceChildren();
  for (const [kind, table] of [["error", counts.failures], ["refused", counts.refusals]]) {
    for (const [reason, n] of Object.entries(table)) body.append(el("tr", {}, el("td", { text: kind }), el("td", { text: reason }), el("td", { text: n })));
  }
  if (!body.children.length) body.append(el("tr", {}, el("td", { colspan: 3, text: "No failure since start." })));
}

function drawRates(target, rates) {
  const width = 900, height = 220, pad = 36;
  const top = Math.max(1, ...rates.map((r) => Math.max(r.issued, r.failed)));
  const now = Date.now(), span = 120000;
  const x = (t) => pad + ((t - (now - span)) / span) * (width - pad - 10);
  const y = (v) => height - pad + 10 - (v / top) * (height - pad - 10);
  const picture = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart-svg",
    "aria-label": rates.length ? `Issuances per second, latest ${rates[rates.length - 1].issued.toFixed(2)}; failures per second, latest ${rates[rates.length - 1].failed.toFixed(2)}` : "Collecting samples" });
  picture.append(svg("line", { x1: pad, x2: width - 10, y1: y(0), y2: y(0), class: "axis-line" }));
  picture.append(svg("text", { x: 2, y: y(top) + 4, class: "axis" }, top.toFixed(1)));
  picture.append(svg("text", { x: 2, y: y(0) + 4, class: "axis" }, "0"));
  for (const [key, cls] of [["issued", "series-ok"], ["failed", "series-bad"]]) {
    if (rates.length < 1) continue;
    const points = rates.map((r) => `${x(r.t).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" ");
    picture.append(svg("polyline", { points, class: cls }));
  }
  target.replaceChildren(picture);
}

function initIssuance() {
  sampleIssuance();
  window.setInterval(sampleIssuance, 2000);
}

// ---- start ------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  setUpSession();
  if (sessionStorage.getItem(MODE_KEY) !== null) {
    if (await signIn()) startPage();
  } else {
    $("#signin").hidden = false;
  }
});
