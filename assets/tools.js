/* closeloop customer-page tools (src/web/sidebar_tools.rs): send a proposal as a tracked
   link (into the open WeCom chat, or as a link to copy elsewhere), attest a claim, mark a number
   invalid or valid, and the manager's rollback, reassignment and freeze lifting.
   Loaded after sidebar.js, whose helpers it uses (window.closeloop). Plain script, no
   build step. Sections are re-rendered by refresh(), so every listener is delegated. */
(function () {
  'use strict';

  var cl = window.closeloop;
  var main = document.querySelector('main');
  if (!cl || !main || main.getAttribute('data-page') !== 'customer') { return; }
  var customer = main.getAttribute('data-customer');

  /* Inside WeCom the page loads the JS-SDK; it is signed once, at load, as on the entry
     page. Anything short of a ready SDK means the link is shown to copy instead, and so
     does every other client: DingTalk and Feishu name no open chat to send into. */
  var chat = (cl.platform === 'wecom' && (window.wx || window.jWeixin)) ? cl.wecom() : null;
  if (chat) { chat.catch(function () { /* sending falls back to copying the link */ }); }
  var CHAT_PATIENCE_MS = 8000;

  function formError(form, text, code) {
    var box = form.querySelector('[data-error]');
    if (!box) { cl.notice(text, code); return; }
    box.textContent = text;
    box.setAttribute('data-code', code || '');
    box.hidden = false;
  }

  function clearFormError(form) {
    var box = form.querySelector('[data-error]');
    if (box) { box.hidden = true; box.textContent = ''; box.removeAttribute('data-code'); }
  }

  function field(form, name) {
    var el = form.querySelector('[name="' + name + '"]');
    return el ? String(el.value || '').trim() : '';
  }

  /* ---- Proposals ------------------------------------------------------------------ */

  /* Resolves to true when WeCom put the link into the open chat. */
  function intoChat(link, title) {
    if (!chat) { return Promise.resolve(false); }
    var timeout = new Promise(function (resolve) {
      setTimeout(function () { resolve(null); }, CHAT_PATIENCE_MS);
    });
    var ready = chat.then(function (wx) { return wx; }, function () { return null; });
    return Promise.race([ready, timeout]).then(function (wx) {
      if (!wx) { return false; }
      return new Promise(function (resolve) {
        wx.invoke('sendChatMessage', {
          msgtype: 'news',
          news: { link: link, title: title, desc: '点击查看方案文档', imgUrl: '' }
        }, function (res) {
          resolve(!!res && res.err_msg === 'sendChatMessage:ok');
        });
      });
    });
  }

  function copy(text, input) {
    function fallback() {
      input.focus();
      input.select();
      var ok = false;
      try { ok = document.execCommand('copy'); } catch (e) { ok = false; }
      cl.toast(ok ? '已复制' : '请长按链接手动复制');
    }
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(function () { cl.toast('已复制'); }, fallback);
    } else {
      fallback();
    }
  }

  /* The link to copy, when it could not go into a chat. */
  function share(link, text) {
    var box = document.getElementById('share-result');
    if (!box) { return; }
    box.textContent = '';
    var p = document.createElement('p');
    p.textContent = text;
    var row = document.createElement('div');
    row.className = 'share-row';
    var input = document.createElement('input');
    input.type = 'text';
    input.readOnly = true;
    input.value = link;
    input.className = 'share-link';
    var button = document.createElement('button');
    button.type = 'button';
    button.className = 'action';
    button.textContent = '复制链接';
    button.addEventListener('click', function () { copy(link, input); });
    row.appendChild(input);
    row.appendChild(button);
    box.appendChild(p);
    box.appendChild(row);
    box.hidden = false;
  }

  function send(button) {
    button.disabled = true;
    cl.clearNotice();
    var id = button.getAttribute('data-send-document');
    var title = button.getAttribute('data-title') || '方案文档';
    cl.request('POST', '/web/documents/' + encodeURIComponent(id) + '/links', null)
      .then(function (res) {
        if (!res.ok) {
          var err = cl.errorOf(res);
          cl.notice(err.message, err.code);
          return null;
        }
        var link = res.data.url;
        return intoChat(link, title).then(function (sent) {
          var box = document.getElementById('share-result');
          if (sent) {
            if (box) { box.hidden = true; }
            cl.toast('已发送到聊天');
          } else if (chat) {
            share(link, '未能放入当前聊天，请复制链接发给客户（已记录为发送）：');
          } else {
            share(link, '已生成可追踪链接（已记录为发送），请复制后发给客户：');
            cl.toast('链接已生成');
          }
        });
      })
      .then(function () { return cl.refresh(); })
      .then(function () { button.disabled = false; });
  }

  /* ---- Attestations --------------------------------------------------------------- */

  /* The proof goes up as a customer document (kind `proof`) once; a retry after a
     refusal reuses it. Resolves to its id, null without a file, false on a failure. */
  function uploadProof(form) {
    var input = form.querySelector('input[type="file"][name="proof"]');
    var file = input && input.files && input.files[0];
    if (!file) { return Promise.resolve(null); }
    if (input.uploaded && input.uploaded.file === file) { return Promise.resolve(input.uploaded.id); }
    var url = '/web/customers/' + encodeURIComponent(customer) + '/documents?kind=proof&filename=' +
      encodeURIComponent(file.name);
    return cl.request('POST', url, file, file.type || 'application/octet-stream').then(function (res) {
      if (res.ok && res.data && res.data.id) {
        input.uploaded = { file: file, id: res.data.id };
        return res.data.id;
      }
      var err = cl.errorOf(res);
      formError(form, '上传证明文件失败：' + err.message, err.code);
      return false;
    });
  }

  function attest(form, done) {
    var note = field(form, 'note');
    var input = form.querySelector('input[type="file"][name="proof"]');
    if (!note && !(input && input.files && input.files[0])) {
      formError(form, '请填写说明或附上证明文件');
      done();
      return;
    }
    uploadProof(form).then(function (proof) {
      if (proof === false) { return null; }
      var body = {};
      if (note) { body.note = note; }
      if (proof) { body.document = proof; }
      var url = '/web/events/' + encodeURIComponent(form.getAttribute('data-point')) + '/attestations';
      return cl.request('POST', url, JSON.stringify(body), 'application/json').then(function (res) {
        if (res.ok) {
          cl.toast('已提交，待主管确认');
          return cl.refresh();
        }
        var err = cl.errorOf(res);
        formError(form, err.message, err.code);
        return null;
      });
    }).then(done);
  }

  /* ---- Forms that post JSON ------------------------------------------------------- */

  /* Per form: method, address, body and what to say when it worked. */
  var JSON_TOOLS = {
    invalidate: function (f) {
      var reason = field(f, 'reason');
      var detail = field(f, 'detail');
      return ['PUT', '/web/phones/' + encodeURIComponent(f.getAttribute('data-phone')) + '/validity',
        { valid: false, reason: reason && detail ? reason + '：' + detail : reason }, '已标记为无效'];
    },
    rollback: function (f) {
      return ['POST', '/web/deals/' + encodeURIComponent(f.getAttribute('data-deal')) + '/rollback',
        { to: field(f, 'to'), reason: field(f, 'reason') }, '已回退'];
    },
    reassign: function (f) {
      return ['POST', '/web/deals/' + encodeURIComponent(f.getAttribute('data-deal')) + '/reassign',
        { owner: field(f, 'owner'), reason: field(f, 'reason') }, '已重新分配'];
    },
    lose: function (f) {
      return ['POST', '/web/deals/' + encodeURIComponent(f.getAttribute('data-deal')) + '/lose',
        { reason: field(f, 'reason'), note: field(f, 'note') }, '已标记输单'];
    },
    reopen: function (f) {
      return ['POST', '/web/deals/' + encodeURIComponent(f.getAttribute('data-deal')) + '/reopen',
        { reason: field(f, 'reason') }, '已重新打开'];
    },
    lift: function (f) {
      return ['POST', '/web/freezes/' + encodeURIComponent(f.getAttribute('data-freeze')) + '/lift',
        { reason: field(f, 'reason') }, '已解除冻结'];
    }
  };

  function postJson(form, done) {
    var spec = JSON_TOOLS[form.getAttribute('data-tool')](form);
    cl.request(spec[0], spec[1], JSON.stringify(spec[2]), 'application/json').then(function (res) {
      if (res.ok) {
        cl.toast(spec[3]);
        return cl.refresh();
      }
      var err = cl.errorOf(res);
      formError(form, err.message, err.code);
      return null;
    }).then(done);
  }

  function restore(button) {
    button.disabled = true;
    cl.clearNotice();
    var url = '/web/phones/' + encodeURIComponent(button.getAttribute('data-phone-restore')) + '/validity';
    cl.request('PUT', url, JSON.stringify({ valid: true }), 'application/json').then(function (res) {
      if (res.ok) {
        cl.toast('已恢复有效');
      } else {
        var err = cl.errorOf(res);
        cl.notice(err.message, err.code);
      }
      return cl.refresh();
    }).then(function () { button.disabled = false; });
  }

  /* ---- Wiring --------------------------------------------------------------------- */

  function openTool(button) {
    var box = button.closest('.tools');
    if (!box) { return; }
    var name = button.getAttribute('data-open-tool');
    Array.prototype.forEach.call(box.querySelectorAll('form.tool-form'), function (f) {
      if (f.getAttribute('data-tool') === name) {
        f.hidden = !f.hidden;
        if (!f.hidden) {
          clearFormError(f);
          var first = f.querySelector('input, select');
          if (first) { first.focus(); }
        }
      } else {
        f.hidden = true;
      }
    });
  }

  document.addEventListener('click', function (ev) {
    var button = ev.target.closest('button');
    if (!button || button.disabled) { return; }
    if (button.hasAttribute('data-open-tool')) {
      openTool(button);
    } else if (button.hasAttribute('data-tool-cancel')) {
      var form = button.closest('form');
      if (form) { form.hidden = true; }
    } else if (button.hasAttribute('data-send-document')) {
      send(button);
    } else if (button.hasAttribute('data-phone-restore')) {
      restore(button);
    }
  });

  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (!form.matches || !form.matches('form.tool-form[data-tool]')) { return; }
    ev.preventDefault();
    var submit = form.querySelector('button[type="submit"]');
    if (submit) { submit.disabled = true; }
    clearFormError(form);
    var done = function () { if (submit) { submit.disabled = false; } };
    if (form.getAttribute('data-tool') === 'attest') {
      attest(form, done);
    } else {
      postJson(form, done);
    }
  });
})();
