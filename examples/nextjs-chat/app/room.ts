/** The one room of this example (server actions publish to it, clients subscribe to it). */
export const ROOM_NAME = "chat:lobby";
