# Renders the OnDemand example app the way OnDemand does, as far as a stand-in can (ERB
# with the form's values as local names; not OnDemand itself): prints the sbatch arguments of submit.yml.erb one per line and writes
# the batch script rendered from template/script.sh.erb to SCRIPT; when SCRIPT is a
# directory, every template/*.erb is rendered into it, named without ".erb" (as
# OnDemand stages an interactive app: before.sh, script.sh, ...).
#
#   ruby ondemand-render.rb APP_DIR SCRIPT|DIR key=value...
require "erb"
require "yaml"
require "json"
require "shellwords"

app, script = ARGV.shift(2)
form = YAML.safe_load(File.read(File.join(app, "form.yml")))
# A field's value: its `value`, else (a select) its first option, as OnDemand shows it.
default = lambda do |v|
  return v unless v.is_a?(Hash)
  return v["value"] if v.key?("value")
  first = (v["options"] || []).first
  first.is_a?(Array) ? first[1] : first
end
values = form.fetch("attributes").to_h { |k, v| [k, default.(v)] }
ARGV.each do |kv|
  k, v = kv.split("=", 2)
  values[k] = v
end
ctx = Object.new
values.each { |k, v| ctx.define_singleton_method(k) { v } }
b = ctx.instance_eval { binding }
render = ->(f) { ERB.new(File.read(File.join(app, f)), trim_mode: "-").result(b) }
submit = YAML.safe_load(render.("submit.yml.erb"))
if File.directory?(script)
  Dir.children(File.join(app, "template")).grep(/\.erb\z/).sort.each do |f|
    out = File.join(script, f.delete_suffix(".erb"))
    File.write(out, render.(File.join("template", f)))
    File.chmod(0o755, out)
  end
else
  File.write(script, render.("template/script.sh.erb"))
end
puts submit.fetch("script").fetch("native")
