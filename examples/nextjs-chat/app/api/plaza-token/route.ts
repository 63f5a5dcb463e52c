// GET /api/plaza-token: a short-lived Plaza token for the signed-in user. The client SDK
// calls it on connect, on `refresh` pushes and after a token_expired close.
import { mintToken } from "@/lib/plaza";
import { currentUser } from "@/lib/session";

export const dynamic = "force-dynamic";

export async function GET(): Promise<Response> {
  const user = await currentUser();
  if (!user) return Response.json({ error: "not signed in" }, { status: 401 });
  return Response.json({ token: mintToken(user) }, { headers: { "Cache-Control": "no-store" } });
}
