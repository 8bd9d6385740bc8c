/**
 * console-forms.js — the interaction editor (every kind of docs/api.md's interaction body) and the timeline
 * rows of a prerecorded episode, which reuse it. Each editor validates what the server would refuse
 * anyway, so the director gets the reason next to the field instead of a 400.
 */

import { h, kindList, kindOf, maxOptions } from "./ui.js";

/** Option ids in order, as many as any interaction may have options. */
const optionId = (index) => String.fromCharCode(97 + index);

/**
 * An editor for one interaction body.
 * @returns {{element: HTMLElement, read: () => object, reset: () => void}} read() throws an Error with a
 *   message for the director when the body is incomplete.
 */
export function interactionEditor() {
  const kind = h("select", { name: "kind", "aria-label": "Kind" },
    kindList().map((spec) => h("option", { value: spec.name, title: spec.description }, spec.name)));
  const prompt = h("input", { name: "prompt", placeholder: "Question or prompt", maxLength: 500, required: true });
  const duration = h("input", { name: "duration", type: "number", min: 1, max: 3600, step: 1, value: 15 });
  const points = h("input", { name: "points", type: "number", min: 0, max: 100000, step: 50, value: 1000 });
  const low = h("input", { name: "scale-low", type: "number", value: 1, step: 1 });
  const high = h("input", { name: "scale-high", type: "number", value: 5, step: 1 });
  const optionList = h("ol", { class: "option-list" });
  // Radio groups are per document: each editor needs its own name for "correct".
  const group = `correct-${Math.random().toString(36).slice(2, 8)}`;

  const addOption = (label = "") => {
    if (optionList.children.length >= maxOptions()) return;
    const row = h("li", { class: "option-row" },
      h("input", { type: "radio", name: group, class: "option-correct", title: "Correct answer" }),
      h("input", { class: "option-label", placeholder: "Answer", maxLength: 200, value: label }),
      h("button", { type: "button", class: "ghost small", title: "Remove", onclick: () => {
        if (optionList.children.length > 2) row.remove();
      } }, "×"));
    optionList.append(row);
    sync(); // the new row's "correct" radio shows only for kinds that are given their answer up front
  };

  const quizHint = h("p", { class: "hint" }, "Tick the correct answer.");
  const options = h("div", { class: "options" }, quizHint, optionList,
    h("button", { type: "button", class: "ghost small", onclick: () => addOption() }, "+ option"));
  const scale = h("div", { class: "row scale-fields" }, h("label", { class: "inline" }, "from", low),
    h("label", { class: "inline" }, "to", high));
  const pointsField = h("label", { class: "inline" }, "points", points);

  function sync() {
    const spec = kindOf(kind.value);
    options.hidden = spec.choices !== "options";
    scale.hidden = spec.choices !== "scale";
    pointsField.hidden = !spec.scored;
    // Only kinds whose answer is known at creation name it here (a prediction's is given at reveal).
    const upFront = spec.correct === "creation";
    quizHint.hidden = !upFront;
    for (const radio of optionList.querySelectorAll(".option-correct")) radio.hidden = !upFront;
  }
  kind.addEventListener("change", sync);

  const element = h("div", { class: "editor" },
    h("div", { class: "row" }, kind, prompt),
    options, scale,
    h("div", { class: "row" }, h("label", { class: "inline" }, "open for", duration, "s"), pointsField));

  const reset = () => {
    prompt.value = "";
    optionList.replaceChildren();
    addOption();
    addOption();
    sync();
  };
  reset();

  const read = () => {
    const body = { kind: kind.value, prompt: prompt.value.trim(), duration: Number(duration.value) || 15 };
    if (!body.prompt) throw new Error("Write the question first.");
    const spec = kindOf(body.kind);
    if (spec.choices === "scale") {
      body.scale = [Math.trunc(Number(low.value)), Math.trunc(Number(high.value))];
      if (!(body.scale[0] < body.scale[1])) throw new Error("The scale needs from < to.");
    } else {
      const rows = [...optionList.children].filter((row) => row.querySelector(".option-label").value.trim());
      if (rows.length < 2) throw new Error("Give at least two answers.");
      body.options = rows.map((row, i) => ({ id: optionId(i), label: row.querySelector(".option-label").value.trim() }));
      if (spec.correct === "creation") {
        const index = rows.findIndex((row) => row.querySelector(".option-correct").checked);
        if (index < 0) throw new Error(`Tick the correct answer of the ${body.kind}.`);
        body.correct = optionId(index);
      }
    }
    if (spec.scored) body.points = Math.max(0, Math.trunc(Number(points.value) || 0));
    return body;
  };

  return { element, read, reset };
}

/** One timeline row: when (seconds from the broadcast start) and what. */
export function timelineRow(onRemove) {
  const at = h("input", { name: "at", type: "number", min: 0, max: 86400, step: 1, value: 0, class: "at" });
  const editor = interactionEditor();
  const element = h("div", { class: "timeline-row" },
    h("div", { class: "row" }, h("label", { class: "inline" }, "at", at, "s"),
      h("button", { type: "button", class: "ghost small", onclick: () => onRemove(element) }, "Remove")),
    editor.element);
  return {
    element,
    read: () => ({ at: Math.max(0, Number(at.value) || 0), interaction: editor.read() }),
  };
}
