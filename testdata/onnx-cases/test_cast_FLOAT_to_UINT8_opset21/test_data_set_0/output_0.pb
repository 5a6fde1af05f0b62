ByJ^_µWº
wNs/±J