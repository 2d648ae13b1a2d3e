"""`hs tag …` (system tags on VMs: userdata, ssh keys, …) and `hs config …` (global configs)."""

from __future__ import annotations

from coordinator.cli.command import Command, Group
from coordinator.cli.commands.resources import VM
from coordinator.cli.declare import Call, Named, arg

TAG_ARG = arg("tag_uuid", metavar="TAG", help="the tag's uuid")
NAMES = (Named("resource_uuid", (VM,)),)  # a tag prints the VM it is on by name (`resource`)

TAG_GROUP = Group("tag", "system tags on VMs (userdata::…, sshkey::…)", (
    Command("create", "add a system tag to a VM (update and delete take the uuid it prints)",
            Call("POST", "/v1/system-tags", body={"resource_uuid": "resource", "tag": "tag"}),
            arg("resource", ref=VM, metavar="VM"), arg("tag"), names=NAMES),
    Command("update", "replace the text of a tag", Call("PUT", "/v1/system-tags/{tag_uuid}", body={"tag": "tag"}),
            TAG_ARG, arg("tag", metavar="TEXT", help="its new text (userdata::…, sshkey::…)"), names=NAMES),
    Command("delete", "delete a tag", Call("DELETE", "/v1/system-tags/{tag_uuid}"), TAG_ARG),
    Command("query", "the system tags: all, a VM's (--resource), or those --like a pattern",
            Call("GET", "/v1/system-tags", query={"resourceUuid": "resource", "tag~": "like"}),
            arg("--resource", ref=VM, metavar="VM"), arg("--like", help="e.g. userdata%%"),
            columns=("uuid", "resource", "tag"), names=NAMES),
))

CONFIG_GROUP = Group("config", "global configs (kvm vm.cacheMode, …)", (
    Command("list", "global configs", Call("GET", "/v1/global-configs"),
            columns=("category", "name", "value", "allowed")),
    Command("set", "set a global config (`hs config list` shows each with its allowed values)",
            Call("PUT", "/v1/global-configs/{category}/{name}", body={"value": "value"}),
            arg("category"), arg("name"), arg("value")),
))
