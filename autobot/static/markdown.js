// A small Markdown renderer that builds DOM nodes and never parses HTML.
//
// An answer comes from a language model and may say anything, including
// "<script>" or "<img onerror=...>". Nothing here hands text to an HTML parser
// (no markup is ever assigned to an element): every piece of the answer becomes
// a text node or the text of an element we create ourselves, so markup in an
// answer shows as the characters it is made of. Links are kept only for http:, https: and mailto: URLs.
//
// Covered: fenced code blocks (``` or ~~~, with a language name; an unclosed
// fence runs to the end, as while an answer streams), headings, paragraphs with
// line breaks, bullet and numbered lists, block quotes, tables, rules, and the
// inline forms `code`, **strong**, *emphasis*, ~~strike~~, [links](url) and bare URLs.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_SEPARATOR = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;
const LANGUAGE = /^[A-Za-z0-9_+#.-]{1,32}$/;
const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

const INLINE = new RegExp(
  [
    "(`+)([\\s\\S]*?[^`])\\1(?!`)", // 1, 2: code span
    "\\*\\*(?=\\S)([\\s\\S]*?\\S)\\*\\*", // 3: strong
    "__(?=\\S)([\\s\\S]*?\\S)__", // 4: strong
    "~~(?=\\S)([\\s\\S]*?\\S)~~", // 5: strike
    "\\*(?=\\S)([\\s\\S]*?\\S)\\*", // 6: emphasis
    "(?<![A-Za-z0-9])_(?=\\S)([\\s\\S]*?\\S)_(?![A-Za-z0-9])", // 7: emphasis
    "(!?)\\[([^\\]\\n]*)\\]\\(\\s*<?([^\\s)>]+)>?(?:\\s+\"[^\"]*\")?\\s*\\)", // 8, 9, 10: link
    "(https?://[^\\s<>()\\[\\]]*[^\\s<>()\\[\\].,;:!?'\"*_~])", // 11: bare URL
  ].join("|"),
  "g",
);

function element(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function safeUrl(text) {
  try {
    const url = new URL(text, window.location.href);
    return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function link(href, label) {
  const anchor = element("a");
  anchor.href = href;
  anchor.target = "_blank";
  anchor.rel = "noopener noreferrer nofollow";
  anchor.textContent = label;
  return anchor;
}

/** Append the inline Markdown of `text` to `parent`. */
export function renderInline(text, parent) {
  const pattern = new RegExp(INLINE.source, "g");
  let last = 0;
  for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
    if (match.index > last) parent.append(text.slice(last, match.index));
    last = pattern.lastIndex;
    if (match[2] !== undefined) {
      const code = element("code");
      const inner = match[2];
      code.textContent = /^ .* $/.test(inner) ? inner.slice(1, -1) : inner;
      parent.append(code);
    } else if (match[3] !== undefined || match[4] !== undefined) {
      const strong = element("strong");
      renderInline(match[3] ?? match[4], strong);
      parent.append(strong);
    } else if (match[5] !== undefined) {
      const strike = element("del");
      renderInline(match[5], strike);
      parent.append(strike);
    } else if (match[6] !== undefined || match[7] !== undefined) {
      const emphasis = element("em");
      renderInline(match[6] ?? match[7], emphasis);
      parent.append(emphasis);
    } else if (match[9] !== undefined) {
      const href = safeUrl(match[10]);
      const label = match[8] ? `image: ${match[9] || match[10]}` : match[9] || match[10];
      parent.append(href ? link(href, label) : match[0]);
    } else if (match[11] !== undefined) {
      const href = safeUrl(match[11]);
      parent.append(href ? link(href, match[11]) : match[11]);
    }
  }
  if (last < text.length) parent.append(text.slice(last));
}

function inlineLines(lines, parent) {
  lines.forEach((line, index) => {
    if (index > 0) parent.append(element("br"));
    renderInline(line.trim(), parent);
  });
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  return row.split(/(?<!\\)\|/).map((cell) => cell.trim().replace(/\\\|/g, "|"));
}

function codeBlock(lines, start, parent) {
  const [, fence, language] = FENCE.exec(lines[start]);
  const body = [];
  let index = start + 1;
  for (; index < lines.length; index += 1) {
    const close = lines[index].trim();
    if (close.startsWith(fence[0].repeat(fence.length)) && /^[`~]+$/.test(close)) {
      index += 1;
      break;
    }
    body.push(lines[index]);
  }
  const pre = element("pre");
  const code = element("code");
  if (language && LANGUAGE.test(language)) {
    code.className = `language-${language}`;
    pre.dataset.language = language;
  }
  code.textContent = body.join("\n");
  pre.append(code);
  parent.append(pre);
  return index;
}

function list(lines, start, parent) {
  const first = ITEM.exec(lines[start]);
  const ordered = /\d/.test(first[2]);
  const node = element(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  let index = start;
  let item = null;
  let itemLines = [];
  const flush = () => {
    if (item) {
      inlineLines(itemLines, item);
      node.append(item);
    }
  };
  while (index < lines.length) {
    const line = lines[index];
    const match = ITEM.exec(line);
    if (match && /\d/.test(match[2]) === ordered) {
      flush();
      item = element("li");
      itemLines = [match[3]];
    } else if (line.trim() !== "" && /^\s+/.test(line) && item) {
      itemLines.push(line);
    } else {
      break;
    }
    index += 1;
  }
  flush();
  parent.append(node);
  return index;
}

function table(lines, start, parent) {
  const head = splitRow(lines[start]);
  const node = element("table");
  const thead = element("thead");
  const headRow = element("tr");
  for (const cell of head) {
    const th = element("th");
    renderInline(cell, th);
    headRow.append(th);
  }
  thead.append(headRow);
  node.append(thead);
  const tbody = element("tbody");
  let index = start + 2;
  for (; index < lines.length && lines[index].includes("|") && lines[index].trim(); index += 1) {
    const row = element("tr");
    const cells = splitRow(lines[index]);
    head.forEach((_, column) => {
      const td = element("td");
      renderInline(cells[column] ?? "", td);
      row.append(td);
    });
    tbody.append(row);
  }
  node.append(tbody);
  const wrapper = element("div", "table-scroll");
  wrapper.append(node);
  parent.append(wrapper);
  return index;
}

function startsBlock(lines, index) {
  const line = lines[index];
  return (
    FENCE.test(line) ||
    HEADING.test(line) ||
    RULE.test(line) ||
    QUOTE.test(line) ||
    ITEM.test(line) ||
    (line.includes("|") && index + 1 < lines.length && TABLE_SEPARATOR.test(lines[index + 1]))
  );
}

function blocks(lines, parent) {
  let index = 0;
  while (index < lines.length) {
    const line = lines[index];
    if (line.trim() === "") {
      index += 1;
    } else if (FENCE.test(line)) {
      index = codeBlock(lines, index, parent);
    } else if (HEADING.test(line)) {
      const [, hashes, text] = HEADING.exec(line);
      // An answer's headings sit below the page's own: h3 at the most.
      const heading = element(`h${Math.min(6, hashes.length + 2)}`);
      renderInline(text, heading);
      parent.append(heading);
      index += 1;
    } else if (RULE.test(line)) {
      parent.append(element("hr"));
      index += 1;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; index < lines.length && QUOTE.test(lines[index]); index += 1) {
        quoted.push(QUOTE.exec(lines[index])[1]);
      }
      const quote = element("blockquote");
      blocks(quoted, quote);
      parent.append(quote);
    } else if (ITEM.test(line)) {
      index = list(lines, index, parent);
    } else if (
      line.includes("|") &&
      index + 1 < lines.length &&
      TABLE_SEPARATOR.test(lines[index + 1])
    ) {
      index = table(lines, index, parent);
    } else {
      const paragraph = [line];
      for (index += 1; index < lines.length; index += 1) {
        if (lines[index].trim() === "" || startsBlock(lines, index)) break;
        paragraph.push(lines[index]);
      }
      const node = element("p");
      inlineLines(paragraph, node);
      parent.append(node);
    }
  }
}

/** The Markdown `text` as a DocumentFragment of elements and text nodes only. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  blocks(String(text).replace(/\r\n?/g, "\n").split("\n"), fragment);
  return fragment;
}
