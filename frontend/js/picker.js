// Choosing networks: a <select> for one (with a shared search box), a filterable checklist for several.
import { store } from "./store.js";
import { archText, esc, pct, samplerOf } from "./util.js";

export const optionText = (n) => `${n.name} (#${n.id}) · ${archText(n)} · ${n.dataset} · ${samplerOf(n)} · test ${pct(n.test_error, 1)}`;

const matches = (n, text) => !text || [n.name, `#${n.id}`, archText(n), n.dataset, samplerOf(n), ...(n.tags || [])]
  .join(" ").toLowerCase().includes(text.toLowerCase());

// Fill a <select> with the networks that match `filter` (the chosen one always stays listed). `reason(n)`,
// when given, says why a network cannot be chosen here ("" when it can): those are listed after the others,
// greyed (disabled) with the reason in their text, so that nobody wonders where a network went.
export function fillSelect(select, chosen, filter = "", { allow = () => true, reason = null } = {}) {
  const id = chosen === undefined ? Number(select.value) : Number(chosen);
  const nets = store.networks.filter((n) => n.id === id || (matches(n, filter) && allow(n)));
  const why = new Map(reason ? nets.map((n) => [n.id, reason(n)]) : []);
  const fit = nets.filter((n) => !why.get(n.id));
  const unfit = nets.filter((n) => why.get(n.id));
  const option = (n) => {
    const no = why.get(n.id);
    return `<option value="${n.id}" ${n.id === id ? "selected" : ""} ${no && n.id !== id ? "disabled" : ""} ${no ? `data-reason="${esc(no)}" title="${esc(no)}"` : ""}>${esc(optionText(n))}${no ? ` — ${esc(no)}` : ""}</option>`;
  };
  select.innerHTML = `<option value="">— choose —</option>` + fit.map(option).join("") +
    (unfit.length ? `<optgroup label="cannot be compared with A">${unfit.map(option).join("")}</optgroup>` : "");
}

export class MultiPicker {
  // container: an element; name: used for ids/labels; onChange(ids) after each change.
  constructor(container, { name, onChange = () => {}, max = 64 }) {
    this.container = container;
    this.name = name;
    this.onChange = onChange;
    this.max = max;
    this.selected = [];
    container.classList.add("picker");
    container.innerHTML = `
      <div class="picker-bar">
        <label>Search <input type="search" class="picker-search" id="${name}-search" placeholder="name, tag, sampler, data set"></label>
        <button type="button" class="secondary small" data-act="all">Select shown</button>
        <button type="button" class="secondary small" data-act="none">Clear</button>
        <span class="picker-count" aria-live="polite"></span>
      </div>
      <div class="picker-list" role="group" aria-label="networks for ${name}"></div>`;
    this.search = container.querySelector(".picker-search");
    this.list = container.querySelector(".picker-list");
    this.search.addEventListener("input", () => this.render());
    container.querySelector("[data-act='all']").addEventListener("click", () => {
      const shown = this.shown().map((n) => n.id);
      this.set([...this.selected, ...shown.filter((id) => !this.selected.includes(id))].slice(0, this.max));
    });
    container.querySelector("[data-act='none']").addEventListener("click", () => this.set([]));
    this.list.addEventListener("change", (ev) => {
      const id = Number(ev.target.value);
      if (ev.target.checked && !this.selected.includes(id)) this.selected.push(id);
      if (!ev.target.checked) this.selected = this.selected.filter((x) => x !== id);
      this.render();
      this.onChange(this.selected);
    });
  }

  shown() { return store.networks.filter((n) => matches(n, this.search.value.trim())); }

  set(ids, { silent = false } = {}) {
    this.selected = ids.map(Number).filter((id, i, all) => all.indexOf(id) === i);
    this.render();
    if (!silent) this.onChange(this.selected);
  }

  render() {
    const shown = this.shown();
    this.list.innerHTML = shown.map((n) => `
      <label class="picker-item" data-id="${n.id}">
        <input type="checkbox" name="${this.name}" value="${n.id}" ${this.selected.includes(n.id) ? "checked" : ""}>
        <span>${esc(optionText(n))}</span>
      </label>`).join("") || `<p class="hint">No network matches.</p>`;
    const missing = this.selected.filter((id) => !store.networks.some((n) => n.id === id));
    this.container.querySelector(".picker-count").textContent = `${this.selected.length} chosen` +
      (missing.length ? ` (not found: ${missing.map((m) => `#${m}`).join(", ")})` : "");
  }
}
