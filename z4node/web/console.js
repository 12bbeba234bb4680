// The z4node console's only script, served by the node itself: uploads
// with a progress bar, and a confirmation before a delete. Pages work
// without it but for uploads (a plain form cannot stream a file to a
// PUT with the session's token in a header).
"use strict";

function uploadOne(form, file) {
  // The body is the file itself: the browser streams it, and the node
  // streams it into the object layer as an S3 PUT.
  return new Promise(function (resolve, reject) {
    var key = form.dataset.prefix + file.name;
    var request = new XMLHttpRequest();
    var progress = document.getElementById("upload-progress");
    var status = document.getElementById("upload-status");
    request.open("PUT", form.dataset.action + "?key=" + encodeURIComponent(key));
    request.setRequestHeader("X-Z4-CSRF", form.dataset.csrf);
    request.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    request.upload.onprogress = function (event) {
      if (event.lengthComputable) {
        progress.max = event.total;
        progress.value = event.loaded;
        status.textContent = file.name + ": " + Math.round(100 * event.loaded / event.total) + " %";
      }
    };
    request.onload = function () {
      if (request.status === 200) {
        resolve();
        return;
      }
      // The node answers a refusal with its error page: show its message.
      var page = new DOMParser().parseFromString(request.responseText, "text/html");
      var code = page.getElementById("error-code");
      var message = page.querySelector(".error-message");
      reject(new Error(file.name + ": " + (code ? code.textContent + ": " : "") +
                       (message ? message.textContent : "HTTP " + request.status)));
    };
    request.onerror = function () {
      reject(new Error(file.name + ": the upload was cut off"));
    };
    request.send(file);
  });
}

function setUpUpload(form) {
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var files = Array.prototype.slice.call(document.getElementById("upload-file").files);
    var status = document.getElementById("upload-status");
    if (files.length === 0) {
      status.textContent = "Choose a file first.";
      return;
    }
    var chain = Promise.resolve();
    files.forEach(function (file) {
      chain = chain.then(function () { return uploadOne(form, file); });
    });
    chain.then(function () {
      status.textContent = "Uploaded.";
      window.location.reload();
    }, function (error) {
      status.textContent = error.message;
      status.className = "error";
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  var upload = document.getElementById("upload");
  if (upload) {
    setUpUpload(upload);
  }
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  });
});
