// The rows of a MessageTable (jsnb/widgets/message_table.py), drawn in the page.
// The kernel sends text, never markup, one message a draw: {summary, reset: rows} replaces
// what is shown, {summary, add: rows} puts new rows on top; each row is a list of display
// strings, newest first. A view asks
// for the rows it missed ({want: "rows"}) when it is drawn, so a second view, or a
// reloaded page, shows the same rows as the first.

function cell(text, column) {
  const td = document.createElement("td");
  td.textContent = text;
  if (column.number) td.className = "jsnb-num";
  else if (text) td.title = text; // clipped to the column: the whole text on hover
  if (column.label === "outcome") td.classList.add(`jsnb-${text.split(" ")[0]}`);
  return td;
}

function render({ model, el }) {
  const columns = model.get("columns");
  const limit = () => model.get("shown_rows");
  const summary = document.createElement("div");
  summary.className = "jsnb-counts";
  const box = document.createElement("div");
  box.className = "jsnb-rows";
  box.style.setProperty("--jsnb-visible", String(model.get("visible_rows")));
  const table = document.createElement("table");
  table.className = "jsnb-messages";
  const cols = document.createElement("colgroup");
  const head = document.createElement("tr");
  for (const column of columns) {
    const col = document.createElement("col");
    if (column.width) col.style.width = column.width;
    cols.append(col);
    const th = document.createElement("th");
    th.textContent = column.label;
    th.title = column.help;
    if (column.number) th.className = "jsnb-num";
    head.append(th);
  }
  const thead = document.createElement("thead");
  thead.append(head);
  const body = document.createElement("tbody");
  table.append(cols, thead, body);
  box.append(table);
  el.append(summary, box);

  const empty = () => {
    const td = document.createElement("td");
    td.colSpan = columns.length;
    td.className = "jsnb-empty";
    td.textContent = "no events";
    const tr = document.createElement("tr");
    tr.append(td);
    return tr;
  };
  const row = (cells) => {
    const tr = document.createElement("tr");
    cells.forEach((text, i) => tr.append(cell(text, columns[i])));
    return tr;
  };
  const show = (msg) => {
    if (msg.summary !== undefined) summary.textContent = msg.summary;
    if (msg.reset) body.replaceChildren(...msg.reset.slice(0, limit()).map(row));
    if (msg.add && msg.add.length) {
      if (body.querySelector(".jsnb-empty")) body.replaceChildren();
      body.prepend(...msg.add.slice(0, limit()).map(row));
      while (body.rows.length > limit()) body.lastElementChild.remove();
    }
    if (!body.rows.length) body.append(empty());
  };
  body.append(empty());
  model.on("msg:custom", show);
  model.send({ want: "rows" });
  return () => model.off("msg:custom", show);
}

export default { render };
