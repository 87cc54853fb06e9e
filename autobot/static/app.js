// The chat page: the chat list, one conversation over its WebSocket, the token prompt.
//
// Data: GET /api/chats (the list, newest first), GET /api/chats/{id} (the
// history), POST /api/chats (a new chat, made when its first message is sent),
// and the WebSocket /api/chats/{id}/ws for sending messages and cancels and
// receiving every answer's events as they happen. The open chat is in the URL's
// hash (#chat=<id>), so a reload comes back to it.

import { api, ApiError, backoff, describeError, setTokenPrompt, socketUrl } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { startOperations } from "./operations.js";

const $ = (id) => document.getElementById(id);

const ui = {
  chatList: $("chat-list"),
  newChat: $("new-chat"),
  messages: $("messages"),
  input: $("message-input"),
  send: $("send"),
  stop: $("stop"),
  composer: $("composer"),
  error: $("error"),
  connection: $("connection"),
  title: $("chat-title"),
  sidebar: $("sidebar"),
  operations: $("operations-panel"),
  toggleChats: $("toggle-chats"),
  toggleOperations: $("toggle-operations"),
  tokenPrompt: $("token-prompt"),
  tokenForm: $("token-form"),
  tokenInput: $("token-input"),
  tokenReason: $("token-reason"),
};

const state = {
  chats: [],
  chatId: null,
  socket: null,
  opened: null, // a promise that resolves when the socket is open
  attempt: 0,
  reconnectTimer: null,
  // The answer streaming in this chat, if any: {node, text, seq, mine, frame}.
  answer: null,
  sending: false,
};

// -- errors and connection state -------------------------------------------------------

function showError(text) {
  ui.error.textContent = text;
  ui.error.hidden = !text;
}

function clearError() {
  showError("");
}

function setConnection(name, label) {
  ui.connection.dataset.state = name;
  ui.connection.textContent = label;
}

// -- the token prompt ------------------------------------------------------------------

setTokenPrompt(
  (rejected) =>
    new Promise((resolve) => {
      ui.tokenReason.textContent = rejected
        ? "The server did not accept that token. Enter the API token again."
        : "This server needs an API token (AUTOBOT_API_TOKEN).";
      ui.tokenInput.value = "";
      const submitted = (event) => {
        event.preventDefault();
        const typed = ui.tokenInput.value.trim();
        if (!typed) return;
        ui.tokenForm.removeEventListener("submit", submitted);
        ui.tokenPrompt.close();
        resolve(typed);
      };
      ui.tokenForm.addEventListener("submit", submitted);
      ui.tokenPrompt.showModal();
      ui.tokenInput.focus();
    }),
);
// The page cannot work without the token: Escape does not dismiss the prompt.
ui.tokenPrompt.addEventListener("cancel", (event) => event.preventDefault());

// -- the chat list ---------------------------------------------------------------------

function chatLabel(chat) {
  return chat.title || "Untitled chat";
}

function formatWhen(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "";
  const today = new Date().toDateString() === when.toDateString();
  return today
    ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : when.toLocaleDateString([], { month: "short", day: "numeric" });
}

function renderChatList() {
  const items = state.chats.map((chat) => {
    const item = document.createElement("li");
    item.dataset.testid = "chat-item";
    item.dataset.id = chat.id;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chat-link";
    if (chat.id === state.chatId) button.setAttribute("aria-current", "true");
    const title = document.createElement("span");
    title.className = "chat-title";
    title.textContent = chatLabel(chat);
    const meta = document.createElement("span");
    meta.className = "chat-meta";
    const count = chat.message_count === 1 ? "1 message" : `${chat.message_count} messages`;
    meta.textContent = `${formatWhen(chat.updated_at)} · ${count}`;
    button.append(title, meta);
    button.addEventListener("click", () => {
      closeDrawers();
      if (chat.id !== state.chatId) openChat(chat.id);
    });
    item.append(button);
    return item;
  });
  ui.chatList.replaceChildren(...items);
}

async function loadChats() {
  const data = await api("GET", "/api/chats");
  // The server lists them newest first; keep that order whatever it is told later.
  state.chats = [...data.chats].sort((a, b) => (a.updated_at < b.updated_at ? 1 : -1));
  renderChatList();
}

async function refreshChats() {
  try {
    await loadChats();
  } catch (error) {
    showError(describeError(error));
  }
}

// -- messages --------------------------------------------------------------------------

function messageNode(role, status) {
  const node = document.createElement("li");
  node.dataset.testid = "message";
  node.dataset.role = role;
  node.className = `message ${role}`;
  if (role === "assistant") node.dataset.status = status;
  const meta = document.createElement("div");
  meta.className = "meta";
  const body = document.createElement("div");
  body.className = "body";
  node.append(meta, body);
  return node;
}

function fillMessage(node, content, status) {
  const role = node.dataset.role;
  const body = node.querySelector(".body");
  if (role === "assistant") {
    node.dataset.status = status;
    body.replaceChildren(renderMarkdown(content));
  } else {
    body.textContent = content;
  }
  const label = role === "user" ? "You" : "AutoBot";
  const shown = role === "assistant" && status !== "complete" ? ` · ${status}` : "";
  node.querySelector(".meta").textContent = label + shown;
}

function addMessage(message) {
  const node = messageNode(message.role, message.status);
  if (message.id) node.dataset.id = message.id;
  fillMessage(node, message.content, message.status);
  ui.messages.append(node);
  scrollToEnd();
  return node;
}

function scrollToEnd() {
  const list = ui.messages;
  list.scrollTop = list.scrollHeight;
}

function renderHistory(messages) {
  ui.messages.replaceChildren();
  for (const message of messages) addMessage(message);
  // An answer streaming when the history was read is shown by the socket's snapshot.
  if (state.answer) ui.messages.append(state.answer.node);
  scrollToEnd();
}

function setStreaming(streaming) {
  ui.stop.disabled = !streaming;
  ui.send.disabled = streaming || state.sending;
}

// -- one answer's events ---------------------------------------------------------------

function beginAnswer(mine, text = "", seq = 0) {
  const node = messageNode("assistant", "streaming");
  fillMessage(node, text, "streaming");
  ui.messages.append(node);
  state.answer = { node, text, seq, mine, frame: null };
  setStreaming(true);
  scrollToEnd();
  return state.answer;
}

function paint(answer) {
  if (answer.frame !== null) return;
  answer.frame = requestAnimationFrame(() => {
    answer.frame = null;
    if (answer.node.dataset.status === "streaming") {
      fillMessage(answer.node, answer.text, "streaming");
      scrollToEnd();
    }
  });
}

function endAnswer(message, status) {
  const answer = state.answer;
  state.answer = null;
  setStreaming(false);
  if (answer && answer.frame !== null) cancelAnimationFrame(answer.frame);
  if (message) {
    const node = answer ? answer.node : addMessage(message);
    node.dataset.id = message.id;
    fillMessage(node, message.content, status ?? message.status);
  } else if (answer) {
    answer.node.remove();
  }
  // An answer asked for elsewhere came with a user message this page has not seen.
  if (!answer || !answer.mine || !message) reloadHistory();
  refreshChats();
}

function onEvent(event) {
  switch (event.type) {
    case "snapshot": {
      const message = event.message;
      if (state.answer && state.answer.seq >= event.seq) return;
      const answer = state.answer ?? beginAnswer(false);
      answer.text = message.content;
      answer.seq = event.seq;
      paint(answer);
      break;
    }
    case "token": {
      const answer = state.answer ?? beginAnswer(false);
      if (event.seq !== undefined) {
        if (event.seq <= answer.seq) return;
        answer.seq = event.seq;
      }
      answer.text += event.delta;
      paint(answer);
      break;
    }
    case "done":
      endAnswer(event.message, "complete");
      break;
    case "cancelled":
      endAnswer(event.message, "cancelled");
      break;
    case "error":
      showError(describeError(event.error));
      if (event.message || state.answer) endAnswer(event.message, "failed");
      break;
    default:
      break;
  }
}

// -- the WebSocket ---------------------------------------------------------------------

function closeSocket() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
  const socket = state.socket;
  state.socket = null;
  state.opened = null;
  if (socket) socket.close(1000, "the page left this chat");
}

function connect(chatId) {
  const socket = new WebSocket(socketUrl(`/api/chats/${encodeURIComponent(chatId)}/ws`));
  state.socket = socket;
  setConnection("connecting", "connecting…");
  state.opened = new Promise((resolve, reject) => {
    socket.addEventListener("open", () => {
      if (state.socket !== socket) return;
      const recovered = state.attempt > 0;
      state.attempt = 0;
      setConnection("connected", "connected");
      if (recovered) clearError();
      resolve(socket);
    });
    socket.addEventListener("close", () => {
      reject(new ApiError(0, { code: "disconnected", message: "the connection closed" }));
      if (state.socket !== socket) return;
      disconnected(chatId);
    });
  });
  // Nobody may be waiting for the promise: a failed attempt is handled by "close".
  state.opened.catch(() => {});
  socket.addEventListener("message", (event) => {
    if (state.socket !== socket) return;
    try {
      onEvent(JSON.parse(event.data));
    } catch (error) {
      showError(`The server sent something this page does not understand: ${error.message}`);
    }
  });
}

function disconnected(chatId) {
  state.socket = null;
  state.opened = null;
  if (state.answer) {
    // How it ended is in the history that the reconnect reads.
    if (state.answer.frame !== null) cancelAnimationFrame(state.answer.frame);
    state.answer.node.remove();
    state.answer = null;
    setStreaming(false);
  }
  const delay = backoff(state.attempt);
  state.attempt += 1;
  setConnection("reconnecting", "reconnecting…");
  showError(
    `Disconnected from the server; reconnecting in ${delay.toFixed(1)} s ` +
      `(attempt ${state.attempt}).`,
  );
  state.reconnectTimer = setTimeout(() => reconnect(chatId), delay * 1000);
}

async function reconnect(chatId) {
  state.reconnectTimer = null;
  if (state.chatId !== chatId) return;
  try {
    // The history first: it says whether the server is back (and the token still good),
    // and shows whatever happened while this page was away.
    const data = await api("GET", `/api/chats/${encodeURIComponent(chatId)}`);
    if (state.chatId !== chatId) return;
    renderHistory(data.messages);
    connect(chatId);
    refreshChats();
  } catch (error) {
    if (state.chatId !== chatId) return;
    if (error.status === 404) {
      showError(describeError(error));
      startDraft();
      refreshChats();
      return;
    }
    disconnected(chatId);
  }
}

// -- choosing a chat -------------------------------------------------------------------

function startDraft() {
  closeSocket();
  state.chatId = null;
  state.answer = null;
  state.attempt = 0;
  setStreaming(false);
  setConnection("idle", "");
  ui.messages.replaceChildren();
  ui.title.textContent = "New chat";
  if (window.location.hash) history.replaceState(null, "", window.location.pathname);
  renderChatList();
  ui.input.focus();
}

async function openChat(chatId) {
  closeSocket();
  state.chatId = chatId;
  state.answer = null;
  state.attempt = 0;
  setStreaming(false);
  history.replaceState(null, "", `#chat=${encodeURIComponent(chatId)}`);
  renderChatList();
  ui.messages.replaceChildren();
  try {
    const data = await api("GET", `/api/chats/${encodeURIComponent(chatId)}`);
    if (state.chatId !== chatId) return;
    ui.title.textContent = chatLabel(data.chat);
    renderHistory(data.messages);
    connect(chatId);
  } catch (error) {
    if (state.chatId !== chatId) return;
    showError(describeError(error));
    if (error.status === 404) startDraft();
    else disconnected(chatId);
  }
}

async function reloadHistory() {
  const chatId = state.chatId;
  if (!chatId) return;
  try {
    const data = await api("GET", `/api/chats/${encodeURIComponent(chatId)}`);
    if (state.chatId === chatId) renderHistory(data.messages);
  } catch (error) {
    showError(describeError(error));
  }
}

// -- sending ---------------------------------------------------------------------------

async function ensureChat(content) {
  if (state.chatId) return;
  const title = content.replace(/\s+/g, " ").trim().slice(0, 60);
  const data = await api("POST", "/api/chats", { title });
  state.chats = [data.chat, ...state.chats.filter((chat) => chat.id !== data.chat.id)];
  await openChat(data.chat.id);
}

async function send() {
  const content = ui.input.value;
  if (!content.trim() || state.answer || state.sending) return;
  state.sending = true;
  setStreaming(false);
  try {
    await ensureChat(content);
    const socket = await state.opened;
    if (!socket) throw new ApiError(0, { code: "disconnected", message: "not connected" });
    clearError();
    addMessage({ role: "user", content });
    beginAnswer(true);
    // detach: a reload mid-answer rejoins it (snapshot, then the rest) instead of cancelling it.
    socket.send(JSON.stringify({ type: "message", content, detach: true }));
    ui.input.value = "";
  } catch (error) {
    showError(describeError(error));
  } finally {
    state.sending = false;
    setStreaming(state.answer !== null);
  }
}

function stop() {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify({ type: "cancel" }));
  }
}

// -- drawers at narrow widths ----------------------------------------------------------

function toggleDrawer(panel, button, other, otherButton) {
  const open = !panel.classList.contains("open");
  panel.classList.toggle("open", open);
  button.setAttribute("aria-expanded", String(open));
  other.classList.remove("open");
  otherButton.setAttribute("aria-expanded", "false");
}

function closeDrawers() {
  for (const [panel, button] of [
    [ui.sidebar, ui.toggleChats],
    [ui.operations, ui.toggleOperations],
  ]) {
    panel.classList.remove("open");
    button.setAttribute("aria-expanded", "false");
  }
}

// -- start -----------------------------------------------------------------------------

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
ui.stop.addEventListener("click", stop);
ui.newChat.addEventListener("click", () => {
  closeDrawers();
  startDraft();
});
ui.toggleChats.addEventListener("click", () =>
  toggleDrawer(ui.sidebar, ui.toggleChats, ui.operations, ui.toggleOperations),
);
ui.toggleOperations.addEventListener("click", () =>
  toggleDrawer(ui.operations, ui.toggleOperations, ui.sidebar, ui.toggleChats),
);
window.addEventListener("hashchange", () => {
  const chatId = chatInHash();
  if (chatId && chatId !== state.chatId) openChat(chatId);
});

function chatInHash() {
  const match = /^#chat=(.+)$/.exec(window.location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

async function start() {
  try {
    await loadChats();
  } catch (error) {
    showError(describeError(error));
  }
  const chatId = chatInHash();
  if (chatId) openChat(chatId);
  else startDraft();
  startOperations({ showError: (error) => showError(describeError(error)) });
  document.body.dataset.ready = "true";
}

start();
