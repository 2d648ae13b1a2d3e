"""Images, whichever backup storage holds them (Ceph or an image store): one record, one `images` resource."""
