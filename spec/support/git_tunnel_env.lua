-- The git tunnel specs' fixtures moved to git_tunnel_support; this name stays for specs written
-- against it on other branches (the same module, not a copy).
return require "git_tunnel_support"
