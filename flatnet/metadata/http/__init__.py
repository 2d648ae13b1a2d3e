"""The metadata server's HTTP: a site per listening address (`site`), its connections (`connection`), the
router and the request handlers see (`routes`), replies as bytes (`wire`) and the IMDSv2 guard (`imdsv2`)."""
