package node

// MasterAddr is the HTTP address of a live master as gossip reports it,
// for a process that runs next to this volume and talks to the master (the
// S3 gateway of kvdb volume --s3); false while none is known.
func (v *Volume) MasterAddr() (string, bool) { return v.gossip.httpOf(RoleMaster) }
