# A real headless Chromium (Debian's package) driven through chromedriver's WebDriver
# protocol: logs in to JupyterLab with the session's password, opens a notebook, runs
# its first cell, waits for OUTPUT-TEXT in the cell's output, saves the notebook and
# takes a screenshot. Run in the bed's network namespace (the node's address is there).
#
#   ruby ondemand-browser.rb BASE-URL PASSWORD NOTEBOOK OUTPUT-TEXT SCREENSHOT.png
#
# Prints what it did, one line per step; exits non-zero with the reason on failure.
require "json"
require "net/http"
require "base64"
require "tmpdir"
require "socket"

base, password, notebook, expect, shot = ARGV
abort "usage: ondemand-browser.rb BASE-URL PASSWORD NOTEBOOK OUTPUT-TEXT SCREENSHOT" unless shot

# A free local port for chromedriver.
port = TCPServer.open("127.0.0.1", 0) { |s| s.addr[1] }
profile = Dir.mktmpdir("tre-chromium-")
driver = Process.spawn("/usr/bin/chromedriver", "--port=#{port}", out: File::NULL, err: File::NULL)
at_exit do
  Process.kill("TERM", driver) rescue nil
  Process.wait(driver) rescue nil
  FileUtils.rm_rf(profile) rescue nil
end
require "fileutils"

def call(http, method, path, body = nil)
  req = (method == :get ? Net::HTTP::Get : method == :delete ? Net::HTTP::Delete : Net::HTTP::Post).new(path)
  req["Content-Type"] = "application/json"
  req.body = JSON.generate(body || {}) unless method == :get || method == :delete
  res = http.request(req)
  value = JSON.parse(res.body)["value"]
  raise "webdriver #{method} #{path}: #{value.inspect[0, 400]}" unless res.is_a?(Net::HTTPSuccess)
  value
end

def wait_for(what, seconds)
  deadline = Time.now + seconds
  loop do
    v = yield
    return v if v
    raise "timed out after #{seconds}s waiting for #{what}" if Time.now > deadline
    sleep 0.5
  end
end

http = wait_for("chromedriver", 20) do
  h = Net::HTTP.new("127.0.0.1", port)
  h.read_timeout = 120
  h.get("/status") && h
rescue SystemCallError
  nil
end

args = %w[--headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking
          --disable-component-update --disable-sync --disable-dev-shm-usage --window-size=1280,900]
args << "--user-data-dir=#{profile}"
session = call(http, :post, "/session", capabilities: { alwaysMatch: {
  browserName: "chrome", "goog:chromeOptions": { binary: "/usr/bin/chromium", args: args }
} })
sid = session.fetch("sessionId")
s = "/session/#{sid}"
puts "browser: #{session.dig("capabilities", "browserVersion")}"
script = ->(js, *a) { call(http, :post, "#{s}/execute/sync", script: js, args: a) }
find = lambda do |css, seconds = 60|
  wait_for(css, seconds) do
    call(http, :post, "#{s}/element", using: "css selector", value: css).values.first
  rescue RuntimeError
    nil
  end
end
keys = ->(el, text) { call(http, :post, "#{s}/element/#{el}/value", text: text) }
click = ->(el) { call(http, :post, "#{s}/element/#{el}/click") }
begin
  # Without the password: the login page, not the Lab.
  call(http, :post, "#{s}/url", url: "#{base}lab")
  wait_for("the login page", 60) { call(http, :get, "#{s}/url").include?("/login") }
  puts "without the password: #{call(http, :get, "#{s}/url").sub(base, "BASE/")}"
  keys.(find.("input[type=password]"), password)
  click.(find.("#login_submit, button[type=submit]"))
  wait_for("the login to finish", 60) { !call(http, :get, "#{s}/url").include?("/login") }
  puts "logged in"
  call(http, :post, "#{s}/url", url: "#{base}lab/tree/#{notebook}")
  # The kernel is ready when the notebook's toolbar shows an idle kernel.
  find.(".jp-Notebook .jp-Cell .cm-content", 120)
  # The kernel is ready when the server has a session for the notebook with an idle
  # kernel; a first start may ask which kernel to use (the notebook's: accept).
  wait_for("the notebook's kernel", 180) do
    dialog = script.("var b = document.querySelector('.jp-Dialog .jp-mod-accept'); if (b) { b.click(); return true } return false")
    puts "accepted the kernel dialog" if dialog
    !dialog && call(http, :post, "#{s}/execute/async", script: <<~JS, args: [notebook])
      var done = arguments[arguments.length - 1];
      fetch('#{base}api/sessions', {credentials: 'same-origin'}).then(r => r.json()).then(l =>
        done(l.some(x => x.path === arguments[0] && x.kernel && x.kernel.execution_state === 'idle')),
        () => done(false));
    JS
  end
  wait_for("an idle kernel in the page", 60) do
    script.("return document.querySelector('.jp-Dialog') === null && document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=\"idle\"]') !== null")
  end
  sleep 1
  puts "notebook open, kernel idle"
  # Into the cell's editor, then Shift+Enter as a user types it (W3C key actions go to
  # the focused element).
  script.("document.querySelector('.jp-Notebook .jp-Cell .cm-content').focus(); return true")
  press = lambda do |*ks|
    down = ks.map { |k| { type: "keyDown", value: k } }
    up = ks.reverse.map { |k| { type: "keyUp", value: k } }
    call(http, :post, "#{s}/actions", actions: [{ type: "key", id: "keyboard", actions: down + up }])
  end
  press.("\uE008", "\uE007")
  File.binwrite(shot.sub(/\.png\z/, "-run.png"), Base64.decode64(call(http, :get, "#{s}/screenshot"))) if ENV["TRE_BROWSER_DEBUG"]
  output = lambda do
    t = script.("var o = document.querySelector('.jp-OutputArea-output'); return o ? o.innerText : null")
    t if t && t.include?(expect)
  end
  out = begin
    wait_for("the cell's output", 30, &output)
  rescue RuntimeError
    # Shift+Enter did not reach the cell: the toolbar's Run button instead.
    puts "Shift+Enter gave no output; clicking the toolbar's Run button"
    click.(find.("jp-button[data-command='notebook:run-cell-and-select-next'], button[data-command='notebook:run-cell-and-select-next']"))
    wait_for("the cell's output", 120, &output)
  end
  puts "cell output: #{out.strip}"
  # Save (Ctrl+S), then wait until the document is no longer dirty.
  press.("\uE009", "s")
  wait_for("the save", 60) do
    script.("return document.querySelector('.jp-mod-dirty') === null && document.title.indexOf('*') < 0")
  end
  puts "saved"
  sleep 1
  File.binwrite(shot, Base64.decode64(call(http, :get, "#{s}/screenshot")))
  puts "screenshot: #{shot}"
ensure
  begin
    File.binwrite(shot.sub(/\.png\z/, "-last.png"), Base64.decode64(call(http, :get, "#{s}/screenshot"))) unless File.exist?(shot)
  rescue StandardError
    nil
  end
  call(http, :delete, s) rescue nil
end
