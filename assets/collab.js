/* closeloop collaboration: the quick-ask and handoff forms on the sidebar's customer page,
   the request page's buttons, and live countdowns. Loaded after sidebar.js, whose helpers
   it uses (window.closeloop). Plain script, no build step. */
(function () {
  'use strict';

  var cl = window.closeloop;
  var main = document.querySelector('main');
  if (!cl || !main) { return; }
  var page = main.getAttribute('data-page');

  function each(selector, root, fn) {
    Array.prototype.forEach.call((root || document).querySelectorAll(selector), fn);
  }

  /* Time left or past; src/web/collab.rs renders the first text the same way. */
  function span(ms) {
    var s = Math.floor(Math.max(ms, 0) / 1000);
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
    var m = Math.floor(s % 3600 / 60), sec = s % 60;
    if (d > 0) { return d + ' 天 ' + h + ' 小时'; }
    if (h > 0) { return h + ' 小时 ' + m + ' 分'; }
    return m + ' 分 ' + sec + ' 秒';
  }

  /* The server's clock at render time (data-now) anchors each countdown, so a phone whose
     clock is off still counts to the real deadline. */
  function tick() {
    each('.countdown[data-due]', null, function (el) {
      if (!el.hasAttribute('data-skew')) {
        el.setAttribute('data-skew', String(Number(el.getAttribute('data-now')) - Date.now()));
      }
      var left = Number(el.getAttribute('data-due')) - (Date.now() + Number(el.getAttribute('data-skew')));
      if (left > 0) {
        el.textContent = '剩余 ' + span(left);
        return;
      }
      el.textContent = '已超时 ' + span(-left);
      el.classList.add('overdue');
      var scope = el.closest('.collab-item, .deadline');
      if (scope) { scope.classList.add('overdue'); }
    });
  }

  function formError(form, text, code, items) {
    var box = form.querySelector('[data-error]');
    if (!box) { cl.notice(text, code, items); return; }
    box.textContent = text;
    box.setAttribute('data-code', code || '');
    if (items && items.length) {
      var ul = document.createElement('ul');
      items.forEach(function (item) {
        var li = document.createElement('li');
        li.textContent = item;
        ul.appendChild(li);
      });
      box.appendChild(ul);
    }
    box.hidden = false;
  }

  function clearFormError(form) {
    var box = form.querySelector('[data-error]');
    if (box) { box.hidden = true; box.textContent = ''; box.removeAttribute('data-code'); }
  }

  function customerPage() {
    var customer = main.getAttribute('data-customer');

    function formFor(key) {
      return document.querySelector('form.collab-form[data-type="' + key + '"]');
    }

    function open(key) {
      var form = formFor(key);
      if (!form) { return; }
      var wasHidden = form.hidden;
      each('form.collab-form', null, function (f) { f.hidden = true; });
      form.hidden = !wasHidden;
      if (!form.hidden) {
        clearFormError(form);
        var result = document.getElementById('collab-result');
        if (result) { result.hidden = true; }
        form.scrollIntoView({ block: 'nearest' });
        var first = form.querySelector('input');
        if (first) { first.focus(); }
      }
    }

    /* Each chosen file goes up as a customer document (kind `artefact`) once; a retry
       after a refusal reuses what is already stored. Resolves to name → document id, or
       null when an upload failed. */
    function uploadArtefacts(form) {
      var artefacts = {};
      var chain = Promise.resolve(true);
      each('input[type="file"][data-artefact]', form, function (input) {
        chain = chain.then(function (ok) {
          var file = input.files && input.files[0];
          var name = input.getAttribute('data-artefact');
          if (!ok) { return false; }
          /* Nothing chosen: the server names everything that is missing. */
          if (!file) { return true; }
          if (input.uploaded && input.uploaded.file === file) {
            artefacts[name] = input.uploaded.id;
            return true;
          }
          var url = '/web/customers/' + encodeURIComponent(customer) + '/documents?kind=artefact&filename=' +
            encodeURIComponent(file.name);
          return cl.request('POST', url, file, file.type || 'application/octet-stream').then(function (res) {
            if (res.ok && res.data && res.data.id) {
              input.uploaded = { file: file, id: res.data.id };
              artefacts[name] = res.data.id;
              return true;
            }
            var err = cl.errorOf(res);
            formError(form, '上传「' + name + '」失败：' + err.message, err.code);
            return false;
          });
        });
      });
      return chain.then(function (ok) { return ok ? artefacts : null; });
    }

    function opened(form, r) {
      form.hidden = true;
      form.reset();
      var box = document.getElementById('collab-result');
      if (box) {
        box.textContent = '已发送给 ' + r.receiver + '，截止 ' + r.due_local + '。';
        var a = document.createElement('a');
        a.href = r.url;
        a.textContent = '查看请求';
        box.appendChild(a);
        box.hidden = false;
      }
      cl.toast('已发送');
    }

    /* 「发起协作」: the picked subject or the typed one, the role, the named member. */
    function submitAdhoc(form) {
      var button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      clearFormError(form);
      var typed = form.querySelector('[name="subject_text"]').value.trim();
      var body = {
        customer: customer,
        subject: typed || form.querySelector('[name="subject"]').value,
        role: form.querySelector('[name="role"]').value,
        assignee: form.querySelector('[name="assignee"]').value,
        description: form.querySelector('[name="description"]').value
      };
      var deal = form.querySelector('[name="deal"]').value;
      if (deal) { body.deal = deal; }
      cl.request('POST', '/web/collab/adhoc', JSON.stringify(body), 'application/json')
        .then(function (res) {
          if (res.ok) {
            opened(form, res.data);
            return cl.refresh();
          }
          var err = cl.errorOf(res);
          formError(form, err.message, err.code);
          return null;
        })
        .then(function () { button.disabled = false; });
    }

    /* Only the members holding the chosen role can be named. */
    each('form.adhoc-form select[name="role"]', null, function (select) {
      select.addEventListener('change', function () {
        var people = select.form.querySelector('select[name="assignee"]');
        people.value = '';
        each('option[data-role]', people, function (o) {
          o.hidden = o.disabled = o.getAttribute('data-role') !== select.value;
        });
      });
    });

    function submit(form) {
      if (form.getAttribute('data-kind') === 'adhoc') { submitAdhoc(form); return; }
      var button = form.querySelector('button[type="submit"]');
      button.disabled = true;
      clearFormError(form);
      var content = {};
      each('input[data-prompt]', form, function (input) {
        content[input.getAttribute('data-prompt')] = input.value;
      });
      var handoff = form.getAttribute('data-kind') === 'handoff';
      (handoff ? uploadArtefacts(form) : Promise.resolve({}))
        .then(function (artefacts) {
          if (!artefacts) { return null; }
          var body = { type: form.getAttribute('data-type'), customer: customer, content: content };
          if (handoff) { body.artefacts = artefacts; }
          return cl.request('POST', '/web/collab/requests', JSON.stringify(body), 'application/json')
            .then(function (res) {
              if (res.ok) {
                opened(form, res.data);
                return cl.refresh();
              }
              var err = cl.errorOf(res);
              formError(form, err.message, err.code, (err.details && err.details.missing) || []);
              return null;
            });
        })
        .then(function () { button.disabled = false; });
    }

    document.addEventListener('click', function (ev) {
      var opener = ev.target.closest('button[data-collab]');
      if (opener && !opener.disabled) {
        open(opener.getAttribute('data-collab'));
        return;
      }
      var cancel = ev.target.closest('button[data-cancel]');
      if (cancel) {
        var form = cancel.closest('form');
        if (form) { form.hidden = true; }
      }
    });

    each('form.collab-form', null, function (form) {
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        submit(form);
      });
    });
  }

  function requestPage() {
    var id = main.getAttribute('data-request');

    function post(step, body, button) {
      button.disabled = true;
      cl.clearNotice();
      cl.request('POST', '/web/collab/requests/' + encodeURIComponent(id) + '/' + step,
        JSON.stringify(body), 'application/json')
        .then(function (res) {
          if (res.ok) {
            location.reload();
            return;
          }
          var err = cl.errorOf(res);
          cl.notice(err.message, err.code);
          var n = document.getElementById('notice');
          if (n) { n.scrollIntoView({ block: 'nearest' }); }
          button.disabled = false;
        });
    }

    document.addEventListener('click', function (ev) {
      var button = ev.target.closest('button[data-step]');
      if (button && !button.disabled) { post(button.getAttribute('data-step'), {}, button); }
    });

    each('form.step-form', null, function (form) {
      form.addEventListener('submit', function (ev) {
        ev.preventDefault();
        var body = {};
        each('input[name]', form, function (input) {
          if (input.type === 'checkbox') { body[input.name] = input.checked; return; }
          if (input.value) { body[input.name] = input.value; }
        });
        post(form.getAttribute('data-step'), body, form.querySelector('button[type="submit"]'));
      });
    });
  }

  tick();
  setInterval(tick, 1000);
  if (page === 'customer') { customerPage(); }
  if (page === 'collab-request') { requestPage(); }
})();
