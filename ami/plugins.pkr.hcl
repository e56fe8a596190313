# Plugins for a modern Packer (`packer init ami/` installs them). Kept in a file of its own:
# Debian's packer 1.6.6 (used by ami/check.sh for offline validation) predates plugins and
# rejects this block, so the check validates every other file and only formats this one.
packer {
  required_version = ">= 1.10.0"

  required_plugins {
    amazon = {
      # imds_support (AMI defaults to IMDSv2) needs a 1.x plugin newer than 1.1.
      version = ">= 1.3.0, < 2.0.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
