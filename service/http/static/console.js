// livefeat console: look up a bundle or one entity through the public HTTP routes.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
};
const show = (value) => (typeof value === "string" ? JSON.stringify(value) :
  Array.isArray(value) ? `[${value.length}] ${value.slice(0, 4).map((x) => +x.toFixed(4)).join(", ")}...` :
  String(value));
const badge = (status) => el("span", { class: `status st-${status}`, "data-status": status }, status);

function fail(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function call(method, path, body) {
  const init = { method, headers: { "content-type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  const answer = await response.json();
  if (!response.ok) {
    throw new Error(`${response.status} ${answer.field ? answer.field + ": " : ""}${answer.reason}`);
  }
  return answer;
}

const ids = (text) => text.split(/[\s,]+/).filter((s) => s).map((s) => {
  if (!/^\d+$/.test(s)) throw new Error(`room_ids: ${JSON.stringify(s)} is not an id`);
  return Number(s);
});

// The tier that answered: the first in read order holding the row (as the store reads).
function answered(tiers) {
  const hit = Object.entries(tiers).find(([, t]) => t.present);
  return hit ? { tier: hit[0], age_ms: hit[1].age_ms } : { tier: "none", age_ms: -1 };
}

function tiersTable(debug) {
  const rows = Object.entries(debug.tiers).map(([name, t]) => el("tr", { "data-tier": name },
    el("td", {}, name), el("td", {}, t.present ? "yes" : t.error ? `error: ${t.error}` : "no"),
    el("td", {}, t.present ? `${(t.age_ms / 1000).toFixed(1)} s` : "-")));
  return el("table", { class: "tiers" }, el("tr", {}, el("th", {}, "tier"), el("th", {}, "holds"),
    el("th", {}, "age")), ...rows);
}

async function lookupEntity(view, idText) {
  const parts = idText.split(":");
  if (!parts.every((p) => /^\d+$/.test(p)) || parts.length > 2) {
    throw new Error("id: expected an integer id, or user_id:room_id");
  }
  const id = parts.length === 2 ? parts.map(Number) : Number(parts[0]);
  // The tiers first: the first one holding the row is the one the read below is answered by.
  const debug = await call("GET", `/debug/entity/${encodeURIComponent(view)}/${idText}`);
  const features = await call("POST", "/v1/features", { view, ids: [id] });
  const row = features.rows[0];
  const from = answered(debug.tiers);
  const table = el("table", { id: "entity-features" },
    el("tr", {}, el("th", {}, "feature"), el("th", {}, "value")),
    ...Object.entries(row.features).map(([name, value]) => el("tr", { "data-feature": name },
      el("td", {}, name), el("td", { class: "value" }, show(value)))));
  return el("section", { id: "entity-result" },
    el("h2", {}, `${view} ${idText} `, badge(row.status[view])),
    el("p", {}, "answered by ", el("b", { id: "answered-by" }, from.tier),
      from.age_ms >= 0 ? `, value age ${(from.age_ms / 1000).toFixed(1)} s` : ""),
    table, el("h3", {}, "tiers"), tiersTable(debug));
}

function roleTable(role, entities) {
  const views = entities.length ? Object.keys(entities[0].status) : [];
  if (!views.length) return el("p", {}, `no ${role} views in this bundle`);
  const names = Object.keys(entities[0].features);
  const head = el("tr", {}, el("th", {}, "id"), ...views.map((v) => el("th", {}, v)),
    ...names.map((n) => el("th", {}, n)));
  const rows = entities.map((e) => {
    const idText = Array.isArray(e.id) ? e.id.join(":") : String(e.id);
    const button = el("button", { class: "link", type: "button" }, idText);
    button.addEventListener("click", () => run(() => lookupEntity(views[0], idText)));
    return el("tr", { "data-id": idText }, el("td", {}, button),
      ...views.map((v) => el("td", {}, badge(e.status[v]))),
      ...names.map((n) => el("td", { "data-feature": n }, show(e.features[n]))));
  });
  return el("div", { class: "scroll" }, el("table", { "data-role": role }, head, ...rows));
}

async function lookupBundle(bundle, userText, roomsText) {
  if (!/^\d+$/.test(userText.trim())) throw new Error("user_id: expected an integer id");
  const got = await call("POST", "/v1/bundle",
    { bundle, user_id: Number(userText), room_ids: ids(roomsText) });
  return el("section", { id: "bundle-result" }, el("h2", {}, `${bundle}: user`),
    roleTable("user", [got.user]), el("h2", {}, "rooms"), roleTable("rooms", got.rooms),
    el("h2", {}, "pairs"), roleTable("pairs", got.pairs),
    el("p", {}, "Click an id for its value in every tier and its age."));
}

async function run(lookup) {
  $("error").hidden = true;
  try {
    $("result").replaceChildren(await lookup());
  } catch (err) {
    $("result").replaceChildren();  // what is left would look like the answer to this lookup
    fail(err.message);
  }
}

async function start() {
  const registry = await call("GET", "/v1/registry");
  for (const name of Object.keys(registry.bundles || {})) $("bundle-name").append(el("option", {}, name));
  for (const name of Object.keys(registry.views)) $("entity-view").append(el("option", {}, name));
  const report = await call("GET", "/ui/report/info");
  $("report-link").replaceChildren(report.available
    ? el("a", { href: "/ui/report", id: "report-anchor" }, "latest report")
    : "no report (serve --report-dir DIR, then livefeat report --out DIR)");
  $("bundle-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => lookupBundle($("bundle-name").value, $("bundle-user").value, $("bundle-rooms").value));
  });
  $("entity-form").addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => lookupEntity($("entity-view").value, $("entity-id").value.trim()));
  });
  document.body.dataset.ready = "true";
}

start().catch((err) => fail(`cannot start: ${err.message}`));
