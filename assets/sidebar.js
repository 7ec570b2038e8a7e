/* closeloop sidebar: finds the customer of the open chat (WeCom JS-SDK), signs in inside
   DingTalk (免登), configures the DingTalk or Feishu SDK, and records taps.
   Plain script, no build step; everything it needs is in the page (data attributes, meta). */
(function () {
  'use strict';

  var main = document.querySelector('main');
  if (!main) { return; }
  var page = main.getAttribute('data-page');
  /* The client the page runs in (wecom, dingtalk, feishu), absent in a plain browser. */
  var platform = main.getAttribute('data-platform');

  function meta(name) {
    var m = document.querySelector('meta[name="' + name + '"]');
    return m ? m.getAttribute('content') : '';
  }

  var csrf = meta('csrf-token');

  /* Same-origin request; resolves to {ok, status, data} whatever the answer. */
  function request(method, url, body, contentType) {
    var headers = { 'X-CSRF-Token': csrf, 'Accept': 'application/json' };
    if (contentType) { headers['Content-Type'] = contentType; }
    return fetch(url, { method: method, credentials: 'same-origin', headers: headers, body: body })
      .then(function (res) {
        return res.text().then(function (text) {
          var data = null;
          try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
          return { ok: res.ok, status: res.status, data: data };
        });
      }, function () {
        return { ok: false, status: 0, data: null };
      });
  }

  function errorOf(res) {
    var err = res.data && res.data.error;
    if (err && err.message) { return err; }
    if (res.status === 0) { return { code: 'network', message: '网络连接失败，请检查网络后重试' }; }
    if (res.status === 401) { return { code: 'unauthenticated', message: '登录已过期，请重新打开侧边栏' }; }
    return { code: 'http_' + res.status, message: '请求失败（' + res.status + '），请稍后重试' };
  }

  var toastTimer = null;
  function toast(text) {
    var t = document.getElementById('toast');
    if (!t) { return; }
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { t.hidden = true; }, 2000);
  }

  /* A message that stays until the next action: refusals must be read, not missed. */
  function notice(text, code, items) {
    var n = document.getElementById('notice');
    if (!n) { return; }
    n.textContent = text;
    n.setAttribute('data-code', code || '');
    n.className = 'notice error';
    if (items && items.length) {
      var ul = document.createElement('ul');
      items.forEach(function (item) {
        var li = document.createElement('li');
        li.textContent = item;
        ul.appendChild(li);
      });
      n.appendChild(ul);
    }
    n.hidden = false;
  }

  function clearNotice() {
    var n = document.getElementById('notice');
    if (n) { n.hidden = true; n.textContent = ''; n.removeAttribute('data-code'); }
  }

  /* Re-renders the page's changing sections from a fresh server render. */
  function refresh() {
    return fetch(location.href, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (res) { return res.ok ? res.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, 'text/html');
        Array.prototype.forEach.call(document.querySelectorAll('[data-refresh]'), function (el) {
          var next = fresh.getElementById(el.id);
          if (next) { el.replaceWith(document.importNode(next, true)); }
        });
      })
      .catch(function () { /* the next action or a reload shows the current state */ });
  }

  function customerPage() {
    var customer = main.getAttribute('data-customer');
    var picker = document.getElementById('file-picker');
    var pendingUpload = null;

    function tap(button) {
      button.disabled = true;
      clearNotice();
      var body = JSON.stringify({ action: button.getAttribute('data-action') });
      request('POST', '/web/customers/' + encodeURIComponent(customer) + '/actions', body, 'application/json')
        .then(function (res) {
          if (res.ok) {
            toast('已记录');
          } else {
            var err = errorOf(res);
            notice(err.message, err.code);
          }
          return refresh();
        })
        .then(function () { button.disabled = false; });
    }

    /* 推进到「X」 only opens the in-page confirmation (native dialogs misbehave in the
       WeCom and DingTalk webviews); 确认推进 sends, with the confirmation the server asks. */
    function confirmBox(button) {
      var deal = button.closest('.deal');
      return deal ? deal.querySelector('[data-advance-confirm]') : null;
    }

    function advance(button) {
      button.disabled = true;
      clearNotice();
      request('POST', '/web/deals/' + encodeURIComponent(button.getAttribute('data-advance')) + '/advance',
        JSON.stringify({ confirm: true }), 'application/json')
        .then(function (res) {
          if (res.ok) {
            toast('已推进到「' + res.data.stage + '」');
          } else {
            var err = errorOf(res);
            var missing = (err.details && err.details.missing) || [];
            notice(err.message, err.code, missing.map(function (m) { return m.message; }));
          }
          return refresh();
        })
        .then(function () { button.disabled = false; });
    }

    function upload(button, file) {
      button.disabled = true;
      clearNotice();
      var url = '/web/customers/' + encodeURIComponent(customer) + '/documents?kind=' +
        encodeURIComponent(button.getAttribute('data-document')) + '&filename=' + encodeURIComponent(file.name);
      request('POST', url, file, file.type || 'application/octet-stream')
        .then(function (res) {
          if (res.ok) {
            toast('已上传');
          } else {
            var err = errorOf(res);
            notice(err.message, err.code);
          }
          return refresh();
        })
        .then(function () { button.disabled = false; });
    }

    /* The action the freeze warning holds back until 仍要记录 (its button's action name). */
    var warning = document.getElementById('freeze-warning');
    var held = null;

    function act(button) {
      var kind = button.getAttribute('data-kind');
      if (kind === 'tap' || kind === 'quick_ask') {
        tap(button);
      } else if (kind === 'upload' && picker) {
        pendingUpload = button;
        picker.value = '';
        picker.click();
      }
    }

    /* The server marks the buttons whose next record would be refused and freeze the rep
       on this customer (data-warn); nothing is sent until the rep says 仍要记录. */
    function warn(button) {
      clearNotice();
      held = button.getAttribute('data-action');
      warning.querySelector('.warning-text').textContent = button.getAttribute('data-warn');
      warning.hidden = false;
    }

    function settle(go) {
      warning.hidden = true;
      var name = held;
      held = null;
      if (!go || name === null) { return; }
      /* The buttons may have been re-rendered meanwhile: act on the current one. */
      var current = Array.prototype.find.call(document.querySelectorAll('#action-buttons button'),
        function (b) { return b.getAttribute('data-action') === name; });
      if (current && !current.disabled) { act(current); }
    }

    document.addEventListener('click', function (ev) {
      var button = ev.target.closest('button');
      if (!button || button.disabled) { return; }
      if (button.hasAttribute('data-warn-go')) { settle(true); return; }
      if (button.hasAttribute('data-warn-cancel')) { settle(false); return; }
      /* A quick-ask with a collaboration type opens its form (collab.js). */
      if (button.hasAttribute('data-collab')) { return; }
      var kind = button.getAttribute('data-kind');
      if (kind === 'tap' || kind === 'quick_ask' || kind === 'upload') {
        if (warning && button.hasAttribute('data-warn')) {
          warn(button);
        } else {
          act(button);
        }
      } else if (button.hasAttribute('data-advance-open')) {
        var box = confirmBox(button);
        if (box) { box.hidden = false; button.hidden = true; }
      } else if (button.hasAttribute('data-advance-cancel')) {
        var open = button.closest('.deal') && button.closest('.deal').querySelector('[data-advance-open]');
        var shown = confirmBox(button);
        if (shown) { shown.hidden = true; }
        if (open) { open.hidden = false; }
      } else if (button.hasAttribute('data-advance')) {
        advance(button);
      }
    });

    if (picker) {
      picker.addEventListener('change', function () {
        var file = picker.files && picker.files[0];
        if (file && pendingUpload) { upload(pendingUpload, file); }
        pendingUpload = null;
      });
    }
  }

  /* The WeCom APIs our pages invoke; wx.config and wx.agentConfig list the same ones. */
  var WECOM_APIS = ['getCurExternalContact', 'getContext', 'sendChatMessage'];
  var wecomReady = null;

  /* Inside WeCom: JS-SDK signatures → wx.config → wx.agentConfig. Resolves to the SDK once
     the app's APIs may be invoked, or rejects with a message to show; runs once a page. */
  function wecom() {
    if (wecomReady) { return wecomReady; }
    wecomReady = new Promise(function (resolve, reject) {
      var wx = window.wx || window.jWeixin;
      if (!wx || !wx.config || !wx.agentConfig) {
        reject(new Error('无法加载企业微信 JS-SDK，请在企业微信客户端中打开，或稍后重试。'));
        return;
      }
      var url = location.href.split('#')[0];
      request('GET', '/web/wecom/js-config?url=' + encodeURIComponent(url)).then(function (res) {
        if (!res.ok) {
          reject(new Error('获取企业微信签名失败：' + errorOf(res).message));
          return;
        }
        var cfg = res.data;
        wx.error(function () {
          reject(new Error('企业微信 JS-SDK 验证失败，请确认应用的可信域名配置后重试。'));
        });
        wx.ready(function () {
          wx.agentConfig({
            corpid: cfg.corp_id,
            agentid: cfg.agent_id,
            timestamp: Number(cfg.timestamp),
            nonceStr: cfg.nonce_str,
            signature: cfg.agent_signature,
            jsApiList: WECOM_APIS,
            success: function () { resolve(wx); },
            fail: function () {
              reject(new Error('企业微信应用授权失败（agentConfig），请稍后重试。'));
            }
          });
        });
        wx.config({
          beta: true,
          debug: false,
          appId: cfg.corp_id,
          timestamp: Number(cfg.timestamp),
          nonceStr: cfg.nonce_str,
          signature: cfg.signature,
          jsApiList: WECOM_APIS
        });
      });
    });
    return wecomReady;
  }

  /* The entry page inside WeCom: getCurExternalContact → our customer → their page. */
  function bridgePage() {
    var status = document.getElementById('status');

    var settled = false;
    function fail(text) {
      settled = true;
      status.textContent = text;
      status.className = 'notice error';
    }
    /* Outside the WeCom client the SDK may never answer at all. */
    setTimeout(function () {
      if (!settled) { fail('识别当前客户超时，请在企业微信客户端的客户聊天中打开侧边栏。'); }
    }, 15000);

    wecom().then(function (wx) {
      wx.invoke('getCurExternalContact', {}, function (r) {
        if (!r || r.err_msg !== 'getCurExternalContact:ok' || !r.userId) {
          fail('未能识别当前聊天的客户，请在与客户的单聊中打开侧边栏。');
          return;
        }
        status.textContent = '正在打开客户资料…';
        request('GET', '/web/wecom/customer?external_userid=' + encodeURIComponent(r.userId))
          .then(function (found) {
            if (found.ok && found.data && found.data.customer_id) {
              settled = true;
              location.replace('/sidebar/customers/' + encodeURIComponent(found.data.customer_id));
            } else if (found.status === 404) {
              fail('该联系人还没有对应的客户记录，请等待同步或联系管理员。');
            } else {
              fail('查找客户失败：' + errorOf(found).message);
            }
          });
      });
    }, function (e) {
      fail(e.message);
    });
  }

  /* A same-site path to go to after sign-in; the server has already checked it. */
  /* The server checks `next` too (session::safe_next); browsers drop tabs and line
     breaks from URLs, so no whitespace or control characters either. */
  function localPath(p) {
    return (p && p.charAt(0) === '/' && p.charAt(1) !== '/' && p.indexOf('\\') === -1 &&
            !/[\s\x00-\x1f\x7f]/.test(p)) ? p : '/';
  }

  /* DingTalk 免登: the JSAPI's requestAuthCode (no dd.config needed) → our session →
     `next`. The code is good for five minutes, once. */
  function dingtalkLoginPage() {
    var status = document.getElementById('status');
    var next = localPath(main.getAttribute('data-next'));
    var settled = false;
    function fail(text) {
      settled = true;
      status.textContent = text;
      status.className = 'notice error';
    }
    function signIn(result) {
      if (settled) { return; }
      var code = result && (result.code || result.authCode);
      if (!code) { fail('未能从钉钉获取登录码，请在钉钉工作台中重新打开。'); return; }
      settled = true;
      status.textContent = '正在登录…';
      request('POST', '/auth/dingtalk/code', JSON.stringify({ code: code }), 'application/json')
        .then(function (res) {
          if (res.ok) {
            location.replace(next);
          } else {
            fail('登录失败：' + errorOf(res).message);
          }
        });
    }
    function refused() {
      if (!settled) { fail('钉钉未能确认您的身份，请在钉钉工作台中重新打开。'); }
    }
    var dd = window.dd;
    if (!dd || !dd.runtime || !dd.runtime.permission || !dd.runtime.permission.requestAuthCode) {
      fail('无法加载钉钉 JSAPI，请在钉钉客户端中打开本页面。');
      return;
    }
    /* Outside the DingTalk client the JSAPI may never answer at all. */
    setTimeout(function () {
      if (!settled) { fail('钉钉登录超时，请在钉钉客户端中打开本页面。'); }
    }, 15000);
    var asked = dd.runtime.permission.requestAuthCode({
      corpId: main.getAttribute('data-corp-id'),
      clientId: main.getAttribute('data-client-id'),
      onSuccess: signIn,
      onFail: refused
    });
    /* Newer JSAPI versions answer with a promise as well as the callbacks. */
    if (asked && typeof asked.then === 'function') { asked.then(signIn, refused); }
  }

  /* The DingTalk APIs our pages invoke; dd.config lists them. */
  var DINGTALK_APIS = ['biz.navigation.setTitle'];
  var dingtalkReady = null;

  /* Inside DingTalk: our signature → dd.config. Resolves to the JSAPI once its authorised
     APIs may be called, or rejects with a message; runs once a page. */
  function dingtalk() {
    if (dingtalkReady) { return dingtalkReady; }
    dingtalkReady = new Promise(function (resolve, reject) {
      var dd = window.dd;
      if (!dd || !dd.config) {
        reject(new Error('无法加载钉钉 JSAPI，请在钉钉客户端中打开。'));
        return;
      }
      var url = location.href.split('#')[0];
      request('GET', '/web/dingtalk/js-config?url=' + encodeURIComponent(url)).then(function (res) {
        if (!res.ok) {
          reject(new Error('获取钉钉签名失败：' + errorOf(res).message));
          return;
        }
        var cfg = res.data;
        dd.error(function () {
          reject(new Error('钉钉 JSAPI 验证失败，请确认应用的安全域名配置后重试。'));
        });
        dd.ready(function () { resolve(dd); });
        dd.config({
          agentId: cfg.agentId,
          corpId: cfg.corpId,
          timeStamp: cfg.timeStamp,
          nonceStr: cfg.nonceStr,
          signature: cfg.signature,
          type: cfg.type,
          jsApiList: DINGTALK_APIS
        });
      });
    });
    return dingtalkReady;
  }

  var feishuReady = null;

  /* Inside Feishu: our signature → h5sdk.config. Resolves to the SDK, or rejects with a
     message; runs once a page. */
  function feishu() {
    if (feishuReady) { return feishuReady; }
    feishuReady = new Promise(function (resolve, reject) {
      var h5sdk = window.h5sdk;
      if (!h5sdk || !h5sdk.config) {
        reject(new Error('无法加载飞书 JSSDK，请在飞书客户端中打开。'));
        return;
      }
      var url = location.href.split('#')[0];
      request('GET', '/web/feishu/js-config?url=' + encodeURIComponent(url)).then(function (res) {
        if (!res.ok) {
          reject(new Error('获取飞书签名失败：' + errorOf(res).message));
          return;
        }
        var cfg = res.data;
        h5sdk.config({
          appId: cfg.appId,
          timestamp: cfg.timestamp,
          nonceStr: cfg.nonceStr,
          signature: cfg.signature,
          jsApiList: [],
          onSuccess: function () { resolve(h5sdk); },
          onFail: function () {
            reject(new Error('飞书 JSSDK 验证失败，请确认应用的 H5 可信域名配置后重试。'));
          }
        });
      });
    });
    return feishuReady;
  }

  /* What collab.js and tools.js (loaded next) share. */
  window.closeloop = {
    request: request, errorOf: errorOf, toast: toast, notice: notice,
    clearNotice: clearNotice, refresh: refresh, platform: platform,
    wecom: wecom, dingtalk: dingtalk, feishu: feishu
  };

  if (page === 'customer') { customerPage(); }
  if (page === 'bridge') { bridgePage(); }
  if (page === 'dingtalk-login') { dingtalkLoginPage(); }
  /* Neither client names the open chat, so nothing here waits on the SDK: a failed config
     only costs DingTalk's native title. */
  if (platform === 'dingtalk') {
    dingtalk().then(function (dd) {
      if (dd.biz && dd.biz.navigation && dd.biz.navigation.setTitle) {
        dd.biz.navigation.setTitle({ title: document.title });
      }
    }, function () { /* the page works without the JSAPI */ });
  }
  if (platform === 'feishu') {
    feishu().catch(function () { /* the page works without the JSSDK */ });
  }
})();
