// The page is a server component: it reads the session and renders either the sign-in form
// or the chat. Nothing here opens a WebSocket; the client components connect after hydration.
import { plazaWsUrl } from "@/lib/config";
import { currentUser } from "@/lib/session";
import { signIn, signOut } from "./actions";
import { Chat } from "./chat";

export const dynamic = "force-dynamic";

export default async function Page() {
  const user = await currentUser();
  if (!user) {
    return (
      <main className="signin">
        <h1>Plaza chat</h1>
        <form action={signIn}>
          <label>
            Your name <input name="name" required maxLength={40} autoFocus data-testid="name" />
          </label>
          <button type="submit" data-testid="signin">Sign in</button>
        </form>
      </main>
    );
  }
  return (
    <main>
      <header>
        <h1>Plaza chat</h1>
        <span data-testid="me">{user.name}</span>
        <form action={signOut}>
          <button type="submit">Sign out</button>
        </form>
      </header>
      <Chat wsUrl={plazaWsUrl()} me={user.id} />
    </main>
  );
}
