"""The image store agent: a directory of images on a host of its own, added by URL, served to hosts."""
