// The wire types of the SyncKairos API (API.md), as the server sends them.
export {};
